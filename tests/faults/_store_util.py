"""Helpers of the store / extraction / probe fault cases (tests/faults/test_store_*.py).

Runs are tiny: the example plugin's CNN (``example-cnn``, seeded tiny random weights) on the
synthetic lesion set, so every result here is a pipeline check, not a finding.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "example-cnn"
DATA = "synthetic:lesions?n=48&size=32"
BATCH = 2  # 24 batches; 8 batches (16 rows) per shard -> 3 shards


def extract_tiny(out: Path, **kw: Any) -> Any:
    """The tiny example CNN's run of the synthetic lesion set under ``out`` (the cases' reference run)."""
    from medprobe.features.extract import extract

    return extract(MODEL, DATA, out, tiny=True, batch_size=BATCH, progress=False, **kw)


def tree_checksums(root: Path, skip: tuple[str, ...] = (".lock",)) -> dict[str, str]:
    """relative path -> sha256 of every file below ``root`` (the lock file left out)."""
    out = {}
    for f in sorted(Path(root).rglob("*")):
        if f.is_file() and f.name not in skip:
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def copy_run(run_dir: Path, dest_root: Path) -> Path:
    """A private copy of a run directory under ``dest_root`` (same folder name)."""
    dest = Path(dest_root) / Path(run_dir).name
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


def features_bytes(run: Any) -> dict[str, bytes]:
    return {f"{l}/{r}": np.asarray(x).tobytes() for l, r, x in run.iter_features()}


def medprobe(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run ``medprobe ARGS`` in this process through the real entry point (exit codes as the
    shell sees them: 0 ok, 1 a check failed, 2 bad input / a MedprobeError)."""
    from medprobe.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def edit_manifest(run_dir: Path, change: Any, reseal: bool = False) -> None:
    """Apply ``change(manifest)`` to ``run_dir/manifest.json`` in place, as a hand edit would
    (``reseal``: recompute its checksums as medprobe would, i.e. a well-formed but hostile run)."""
    from medprobe.features.store import sample_ids_sha256, seal_manifest

    path = Path(run_dir) / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    if reseal:
        m["dataset"]["sample_ids_sha256"] = sample_ids_sha256(m["dataset"]["sample_ids"])
        m = seal_manifest(m)
    path.write_text(json.dumps(m, indent=2))


def flip_float(path: Path, value: float) -> None:
    """Overwrite the last float32 of a safetensors file with ``value`` (size unchanged)."""
    data = bytearray(Path(path).read_bytes())
    data[-4:] = np.float32(value).tobytes()
    Path(path).write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) - keep])


def env() -> dict[str, str]:
    """The environment for a child ``python`` (same import path as this process)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def can_unshare() -> bool:
    """True when ``unshare -rm`` gives this user a private mount namespace (to mount a small
    tmpfs or a read-only bind mount without touching the host)."""
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                                "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def in_namespace(script: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run the shell ``script`` in a private user + mount namespace (``unshare -rm``)."""
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env(), timeout=timeout)
