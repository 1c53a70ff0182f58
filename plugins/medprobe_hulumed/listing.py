"""Recorded module listings of Hulu-Med (``listing_<variant>.json`` in this package).

Hulu-Med's modeling code lives on the hub (``trust_remote_code``), so its layer map is validated
against a listing of ``named_modules()`` names recorded from the published code instead of an
imported model. A listing file is a JSON object::

    {
      "variant": "7b",                      # listing_<variant>.json
      "hub_id": "ZJU-AI4H/Hulu-Med-7B",
      "source": "what the names reflect: repositories, commits, caveats",
      "config": {...},                      # the config values the layer groups read
      "unverified": ["vision_encoder_config.num_hidden_layers", ...],
      "modules": ["model", "model.embed_tokens", ...]
    }

:func:`load_listing` checks that shape and raises :class:`~medprobe.adapter.AdapterError` naming
the file. ``record_listing`` regenerates the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from medprobe.adapter import AdapterError
from medprobe.registry import read_json_object

REQUIRED = {"variant": str, "hub_id": str, "source": str, "config": dict, "unverified": list, "modules": list}


@dataclass(frozen=True)
class Listing:
    """One recorded listing: module names, the config dict they go with, and their provenance."""

    variant: str
    hub_id: str
    source: str
    config: Mapping[str, Any]
    unverified: tuple[str, ...]
    modules: tuple[str, ...]
    path: str

    def describe(self) -> str:
        """``LayerMap.resolved_against`` text: the file, what it reflects, what is unverified."""
        text = f"recorded listing {Path(self.path).name}: {self.source}"
        if self.unverified:
            text += f" UNVERIFIED: {', '.join(self.unverified)}."
        return text


def listing_file(variant: str) -> Path:
    """The packaged listing file of ``variant`` (``"4b"``, ``"7b"``, ``"14b"``, ``"32b"``)."""
    with resources.as_file(resources.files("medprobe_hulumed").joinpath(f"listing_{variant}.json")) as path:
        return Path(path)


def available_variants() -> list[str]:
    """Variants with a packaged listing, smallest first."""
    names = [p.name for p in resources.files("medprobe_hulumed").iterdir()]
    found = [m.group(1) for n in names if (m := re.fullmatch(r"listing_(\w+)\.json", n))]
    return sorted(found, key=lambda v: (float(re.sub(r"[^0-9.]", "", v) or 0), v))


def load_listing(path: str | Path) -> Listing:
    """Read and check one listing file; :class:`AdapterError` names the file and the problem."""
    path = Path(path)
    data = read_json_object(path, "Hulu-Med module listing", AdapterError)
    problems = [
        f"'{key}' must be a {kind.__name__}" for key, kind in REQUIRED.items() if not isinstance(data.get(key), kind)
    ]
    if not problems:
        bad = [m for m in data["modules"] if not isinstance(m, str) or not m]
        if bad:
            problems.append(f"'modules' holds {len(bad)} entries that are not non-empty strings")
        dups = len(data["modules"]) - len(set(data["modules"]))
        if dups:
            problems.append(f"'modules' repeats {dups} names")
    if problems:
        raise AdapterError(f"{path}: invalid Hulu-Med module listing: " + "; ".join(problems))
    return Listing(
        variant=data["variant"],
        hub_id=data["hub_id"],
        source=data["source"],
        config=data["config"],
        unverified=tuple(str(u) for u in data["unverified"]),
        modules=tuple(data["modules"]),
        path=str(path),
    )
