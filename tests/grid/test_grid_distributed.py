"""Data-parallel extraction: whole batches per rank, rank shards merged by the last rank (or after a
gloo barrier); the merged run is bit-identical to a single-process run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medprobe.features.distributed import DistributedError
from medprobe.features.extract import extract
from medprobe.features.store import Run

DATA = "synthetic:lesions?n=40&size=32"
VENV_BIN = Path(sys.executable).parent


def features(run: Run) -> dict[str, bytes]:
    return {f"{l}/{r}": np.asarray(x).tobytes() for l, r, x in run.iter_features()}


def only_run(folder: Path) -> Run:
    (path,) = [p for p in folder.iterdir() if (p / "manifest.json").is_file()]
    return Run.open(path)


def test_ranks_in_turn_with_a_killed_rank_resuming(tmp_path):
    kw = dict(tiny=True, batch_size=2, device="cpu", dtype="fp32", progress=False)
    reference = extract("example-cnn", DATA, tmp_path / "ref", **kw)

    def stop(batch_no):
        if batch_no == 16:  # rank 0 computes batches 0, 2, ..., 18; its first shard (8 batches, 0..14) is on disk
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract("example-cnn", DATA, tmp_path / "dp", world_size=2, rank=0, on_batch=stop, **kw)
    done: list[int] = []
    r0 = extract("example-cnn", DATA, tmp_path / "dp", world_size=2, rank=0, on_batch=done.append, **kw)
    assert done == [16, 18]  # only the batches after its last shard
    assert not r0.complete and (r0.path / "ranks" / "rank-0" / "rank.json").is_file()
    assert r0.manifest["status"] == "incomplete" and r0.key == reference.key
    r1 = extract("example-cnn", DATA, tmp_path / "dp", world_size=2, rank=1, **kw)
    assert r1.complete and r1.path == r0.path and not (r1.path / "ranks").exists()
    assert features(r1) == features(reference) and not r1.verify()
    assert r1.manifest["distributed"]["world_size"] == 2
    np.testing.assert_array_equal(r1.labels, reference.labels)
    # a later call on any rank finds the run complete
    assert extract("example-cnn", DATA, tmp_path / "dp", world_size=2, rank=0, **kw).complete


def test_rank_arguments_are_checked(tmp_path):
    with pytest.raises(DistributedError, match="--rank must be in 0..1"):
        extract("example-cnn", DATA, tmp_path, tiny=True, world_size=2, rank=2)
    with pytest.raises(DistributedError, match="--no-resume is not supported"):
        extract("example-cnn", DATA, tmp_path, tiny=True, world_size=2, rank=0, resume=False, device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one(tmp_path):
    args = ["extract", "-m", "example-cnn", "-d", DATA, "--tiny", "--batch-size", "4", "--device", "cpu", "--dtype", "fp32"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.Popen([sys.executable, "-m", "medprobe.cli", *args, "--out", str(tmp_path / "one")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    two = subprocess.run([str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
                          "-m", "medprobe.cli", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert single.wait(timeout=300) == 0, single.stdout.read()
    assert two.returncode == 0, two.stdout + two.stderr
    assert "the run completes when the last rank finishes" in two.stdout  # one rank left the merge to the other
    merged, reference = only_run(tmp_path / "two"), only_run(tmp_path / "one")
    assert merged.complete and merged.key == reference.key
    assert features(merged) == features(reference)


GLOO_SCRIPT = """
import sys
import torch.distributed as dist
from medprobe.features.extract import extract
out, mode = sys.argv[1], sys.argv[2]
kw = dict(tiny=True, batch_size=4, device="cpu", dtype="fp32", progress=False)
if mode == "single":
    run = extract("medgemma-4b", "synthetic:lesions?n=40&size=32", out, **kw)
else:
    dist.init_process_group("gloo")
    run = extract("medgemma-4b", "synthetic:lesions?n=40&size=32", out, world_size=dist.get_world_size(),
                  rank=dist.get_rank(), **kw)
    assert run.complete, "after the barrier every rank sees the merged run"
    dist.destroy_process_group()
print(run.path)
"""


def test_gloo_process_group_tiny_mllm_bit_identical(tmp_path):
    port = str(_free_port())
    base = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", GLOO_SCRIPT, str(tmp_path / "one"), "single"], env=base,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for rank in range(2):
        env = dict(base, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, "-c", GLOO_SCRIPT, str(tmp_path / "two"), "ranks"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)
    assert outputs[1].strip().splitlines()[-1] == outputs[2].strip().splitlines()[-1]  # same run directory
    merged, reference = only_run(tmp_path / "two"), only_run(tmp_path / "one")
    assert merged.complete and merged.key == reference.key
    assert ("llm.00", "last-token") in merged.feature_keys
    assert features(merged) == features(reference)


def test_extract_cli_rank_options():
    from click.testing import CliRunner

    from medprobe.cli import cli

    out = CliRunner().invoke(cli, ["extract", "-m", "example-cnn", "-d", DATA, "--tiny", "--world-size", "2"])
    assert out.exit_code == 2 and "--world-size needs --rank" in out.output
    help_text = CliRunner().invoke(cli, ["extract", "--help"]).output
    for option in ("--world-size", "--rank", "--device-map", "--max-memory"):
        assert option in help_text
