"""Errors raised while opening a dataset.

Every error is a :class:`~medprobe.registry.MedprobeError` (the CLI prints it without a
traceback) and its message names the file (or spec) and the reason.

- :class:`DatasetSpecError`: the spec string or an option is wrong (unknown scheme, bad value).
- :class:`DatasetLayoutError`: the dataset as a whole cannot be read (missing folder, CSV
  without a required column, an ``.npz`` holding pickled objects). Never skippable.
- :class:`BadSampleError`: one sample is unusable (truncated or empty file, not an image, too
  small, unknown label, path escaping the root). With ``skip_bad`` it becomes a recorded skip.
- :class:`BadSamplesError`: raised by :func:`~medprobe.datasets.open_dataset` when bad samples
  were found and ``skip_bad`` is off; it lists every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import MedprobeError


class DatasetError(MedprobeError):
    """Base class of the dataset errors."""


class DatasetSpecError(DatasetError):
    """A dataset spec or loader option is invalid."""


class DatasetLayoutError(DatasetError):
    """The dataset's files are not in the layout its loader reads."""


@dataclass(frozen=True)
class BadSample:
    """One unusable sample: its id, the file (or array slot) it came from, and why."""

    id: str
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class BadSampleError(DatasetError):
    """One sample cannot be used; ``bad`` says which and why."""

    def __init__(self, bad: BadSample):
        super().__init__(str(bad))
        self.bad = bad


class BadSamplesError(DatasetError):
    """Bad samples were found and ``skip_bad`` was off."""

    MAX_LISTED = 20

    def __init__(self, spec: str, bad: list[BadSample]):
        self.spec = spec
        self.bad = list(bad)
        lines = [f"{len(self.bad)} bad sample(s) in dataset '{spec}' (pass --skip-bad / skip_bad=True to skip and record them):"]
        lines += [f"  - {b}" for b in self.bad[: self.MAX_LISTED]]
        if len(self.bad) > self.MAX_LISTED:
            lines.append(f"  ... and {len(self.bad) - self.MAX_LISTED} more")
        super().__init__("\n".join(lines))
