"""Shared fixtures of the fault suite: run the real ``medprobe`` entry point, checksum folders,
drop privileges so file permissions apply, plugins made from source text.

``medprobe(*args)`` calls :func:`medprobe.cli.main` in this process (the console script's code
path: its exit status and its ``Error:`` line, not click's test runner) and returns a
:class:`faultkit.Result`; an uncaught exception (a raw traceback) fails the test as itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultkit import Result, digest, run_subprocess, unprivileged_prefix  # noqa: E402


@pytest.fixture
def medprobe(capsys):
    """Run ``medprobe ARGS`` in-process; returns ``Result(code, out, err)``."""
    from medprobe.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def unchanged():
    """``with unchanged(folder):`` asserts that no file under ``folder`` was added, removed or
    altered by the block (sha256 of every file before and after)."""
    import contextlib

    @contextlib.contextmanager
    def check(*folders: Path):
        before = [digest(f) for f in folders]
        yield
        after = [digest(f) for f in folders]
        for folder, b, a in zip(folders, before, after):
            assert a == b, f"files under {folder} changed: {sorted(set(a.items()) ^ set(b.items()))}"

    return check


@pytest.fixture(scope="session")
def unprivileged():
    """Run ``medprobe ARGS`` in a subprocess where file permissions apply even to root (all
    capabilities dropped with setpriv); skips where that is impossible."""
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without a working setpriv: permission faults cannot be reproduced")

    def run(*args: str) -> Result:
        return run_subprocess([str(a) for a in args], prefix=prefix)

    return run


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """``install({"name": source})``: plugins from source text, each a fake installed
    distribution ``mpf-<name>`` with an entry point ``<name>`` in the ``medprobe`` group, added
    to the real entry points; plugin state is rediscovered before and after the test."""
    from medprobe import plugins as plugin_mod
    from medprobe.testing import fake_distribution

    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("MEDPROBE_STRICT_PLUGINS", "MEDPROBE_LOAD_PLUGINS", "MEDPROBE_BLOCK_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    real = plugin_mod.entry_points()

    def install(sources: dict[str, str]) -> None:
        eps = list(real)
        for name, source in sources.items():
            module = f"mpf_{name}_plugin"
            eps += fake_distribution(tmp_path / name, f"mpf-{name}", {module: source}, {name: module})
        monkeypatch.setattr(plugin_mod, "entry_points", lambda: eps)
        plugin_mod.set_plugins(None)

    yield install
    plugin_mod.set_plugins(None)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A complete reference run of the store suites' tiny extraction (48 rows, 4 feature files),
    made once per module (:func:`_store_util.extract_tiny`)."""
    from _store_util import extract_tiny

    return extract_tiny(tmp_path_factory.mktemp("base")).path


@pytest.fixture(scope="module")
def reference(base):
    """The bytes of every feature file of :func:`base`."""
    from _store_util import features_bytes
    from medprobe.features.store import Run

    return features_bytes(Run.open(base))
