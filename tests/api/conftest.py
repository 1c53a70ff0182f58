"""Shared runs and helpers of the Python-API tests (tiny models, a small synthetic dataset).

Torch runs single-threaded here: on a shared 2-core CI machine, intra-op threads competing with
other jobs make the probes many times slower; results are compared within one setting only.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

DATA = "synthetic:lesions?n=40&size=32"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def cli_json(args: list[str]) -> Any:
    """Run ``medprobe ARGS`` in-process and parse its JSON output (fails with the output)."""
    from medprobe.cli import cli

    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def cli_ok(args: list[str]) -> str:
    from medprobe.cli import cli

    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    return out.output


def comparable(report: dict[str, Any], *roots: Path | str) -> dict[str, Any]:
    """A report dict without what legitimately differs between two calls: the creation time,
    the ``extra`` block (command line, paths) and any path under ``roots`` inside strings."""
    data = copy.deepcopy(report)
    data.pop("created", None)
    data.pop("extra", None)
    names = sorted((str(Path(r)) for r in roots), key=len, reverse=True)

    def scrub(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: scrub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        if isinstance(v, str):
            for name in names:
                v = v.replace(name, "<OUT>")
        return v

    return scrub(data)


@pytest.fixture(scope="session")
def api_runs(tmp_path_factory) -> SimpleNamespace:
    """Runs of a tiny MLLM (lingshu-7b) and a tiny CNN (example-cnn) made through ``mp.extract``."""
    import medprobe as mp

    root = tmp_path_factory.mktemp("api-runs")
    with torch_threads(1):
        mllm = mp.extract("lingshu-7b", DATA, root, tiny=True, batch_size=8, progress=False)
        cnn = mp.extract("example-cnn", DATA, root, tiny=True, batch_size=8, progress=False)
    return SimpleNamespace(root=root, mllm=mllm, cnn=cnn)


@pytest.fixture(scope="session")
def api_report(api_runs, tmp_path_factory):
    """``mp.report`` of both runs, written (all four formats) into its own folder."""
    import medprobe as mp

    out = tmp_path_factory.mktemp("api-report")
    with torch_threads(1):
        report = mp.report([api_runs.mllm, api_runs.cnn], out=out)
    return report
