"""Fault cases of extraction (and of every command on a read-only folder): a full disk, a
read-only output folder, fp16 on models that do not cast, NaN/Inf from a model, a readout that
applies to no layer (docs/reliability.md, "Store, extraction and probing"; corpus rows in the
test names).

The full disk is a real small tmpfs and the read-only folder a real read-only bind mount, both
in a private mount namespace (``unshare -rm``); where user namespaces are not allowed, the
read-only case falls back to ``chmod`` (non-root users) and the full-disk case is skipped.

Tiny random example CNN on the synthetic lesion set: pipeline checks, not findings.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from _store_util import (BATCH, extract_tiny, DATA, MODEL, can_unshare, copy_run, env, features_bytes, in_namespace, medprobe,
                         tree_checksums)
from medprobe.features.extract import extract
from medprobe.features.store import Run

UNSHARE = can_unshare()


def _cli(*args: str) -> str:
    return " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "medprobe.cli", *args])


# -- 50: disk full during the shards and during finalize, then resume --------------------------


@pytest.mark.slow  # two child pythons
@pytest.mark.skipif(not UNSHARE, reason="needs `unshare -rm` (user namespaces) to mount a small tmpfs")
@pytest.mark.parametrize("size, phase", [("24k", "shards"), ("40k", "finalize")])
def test_50_disk_full_is_one_line_and_resumes_bit_identical(tmp_path, reference, size, phase):
    mnt, kept, done = tmp_path / "mnt", tmp_path / "kept", tmp_path / "done"
    for d in (mnt, kept, done):
        d.mkdir()
    extract_cmd = _cli("extract", "-m", MODEL, "-d", DATA, "--tiny", "--batch-size", BATCH, "--store", mnt)
    script = (
        f"mount -t tmpfs -o size={size} tmpfs {mnt} && "
        f"{{ {extract_cmd} > /dev/null 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1; }}; "
        f"cp -a {mnt}/. {kept}/ && mount -o remount,size=4m {mnt} && "  # "free space", then rerun
        f"{{ {extract_cmd} > /dev/null 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2; }}; cp -a {mnt}/. {done}/"
    )
    proc = in_namespace(script)
    assert proc.returncode == 0, proc.stderr
    err = (tmp_path / "err1").read_text()
    assert (tmp_path / "rc1").read_text().strip() == "2"
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"Error: {mnt}/" in err and "failed: no space left on device (errno 28); free space and rerun the same command to resume" in err
    run_name = next(kept.iterdir()).name
    m = json.loads((kept / run_name / "manifest.json").read_text())
    assert m["status"] == "incomplete"
    if phase == "shards":
        assert 0 < m["rows_done"] < 48 and f"({m['rows_done']} of 48 rows are kept in {mnt}/{run_name})" in err
    else:
        assert m["rows_done"] == 48 and "(48 of 48 rows are kept" in err
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    run = Run.open(done / run_name)
    assert features_bytes(run) == reference and run.verify() == []


# -- 51: a read-only output folder, for every command ------------------------------------------

RO_CASES = r"""
import contextlib, io, json, sys
from medprobe.cli import main
ro, writable, out = sys.argv[1], sys.argv[2], sys.argv[3]
run = ro + "/runs/" + sys.argv[4]
probed = ro + "/probed/" + sys.argv[4]
ex = ["extract", "-m", "example-cnn", "--tiny", "--batch-size", "2"]
cases = {
    "extract-reuse": ex + ["-d", "synthetic:lesions?n=48&size=32", "--store", ro + "/runs", "--json"],
    "extract-new": ex + ["-d", "synthetic:lesions?n=40&size=32", "--store", ro + "/runs"],
    "probe-unprobed": ["probe", run],
    "probe-saved": ["probe", probed, "--json"],
    "report-ro-out": ["report", probed, "--out", ro + "/report"],
    "report-writable-out": ["report", probed, "--out", writable + "/report"],
    "cache-verify": ["cache", "verify", run],
    "cache-rm": ["cache", "rm", run, "--yes"],
}
results = {}
for name, argv in cases.items():
    err, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
        try:
            main(argv)
            rc = 0
        except SystemExit as exc:
            rc = exc.code
        except BaseException as exc:
            rc, err = "raised", io.StringIO(f"{type(exc).__name__}: {exc}")
    results[name] = [rc, err.getvalue(), stdout.getvalue()]
json.dump(results, open(out, "w"))
"""


@pytest.fixture
def read_only_tree(base, tmp_path):
    """``ro/runs/RUN`` (never probed) and ``ro/probed/RUN`` (linear probe saved), made read-only
    by the case; returns (ro folder, run name)."""
    from medprobe.tasks.pipeline import probe_run

    ro = tmp_path / "ro"
    copy_run(base, ro / "runs")
    probed = copy_run(base, ro / "probed")
    probe_run(probed, "linear")
    return ro, base.name


def _run_read_only(ro: Path, writable: Path, name: str, tmp_path: Path) -> dict:
    script = tmp_path / "ro_cases.py"
    script.write_text(RO_CASES)
    out = tmp_path / "ro_results.json"
    child = " ".join(shlex.quote(str(a)) for a in [sys.executable, script, ro, writable, out, name])
    if UNSHARE:
        proc = in_namespace(f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && {child}")
    elif os.geteuid() != 0:
        import subprocess

        modes = {p: p.stat().st_mode for p in [ro, *ro.rglob("*")]}
        for p in modes:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        try:
            proc = subprocess.run(child, shell=True, capture_output=True, text=True, env=env(), timeout=300)
        finally:
            for p, mode in modes.items():
                p.chmod(stat.S_IMODE(mode))
    else:
        pytest.skip("root without `unshare -rm`: no way to make a folder read-only")
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


@pytest.mark.slow  # a child python running eight commands
def test_51_read_only_folder_every_command(read_only_tree, tmp_path):
    ro, name = read_only_tree
    writable = tmp_path / "w"
    writable.mkdir()
    before = tree_checksums(ro)
    res = _run_read_only(ro, writable, name, tmp_path)
    for case, (rc, err, _) in res.items():
        assert "Traceback" not in err and err.count("\n") <= 1, (case, err)
    rc, err, out = res["extract-reuse"]  # a complete run in a read-only folder is reused
    assert rc == 0 and json.loads(out)["run"] == f"{ro}/runs/{name}", err
    rc, err, _ = res["extract-new"]
    assert rc == 2 and f"Error: {ro}/runs/example-cnn__synthetic-lesions__" in err
    assert "cannot write the run's shards and manifest there" in err and "choose a writable --out" in err
    rc, err, _ = res["probe-unprobed"]  # refused before any training
    assert rc == 2 and f"Error: {ro}/runs/{name}: cannot write the linear probe results there" in err
    assert f"copy the run to a writable folder (cp -r {ro}/runs/{name} DEST)" in err
    rc, err, out = res["probe-saved"]  # saved results are read
    assert rc == 0 and json.loads(out)["linear"]["probe"] == "linear", err
    rc, err, _ = res["report-ro-out"]
    assert rc == 2 and f"Error: {ro}/report: cannot write the report there" in err
    rc, err, _ = res["report-writable-out"]
    assert rc == 0 and (writable / "report" / "report.json").is_file(), err
    rc, err, out = res["cache-verify"]
    assert rc == 0 and out.strip() == f"{ro}/runs/{name}: ok", err
    rc, err, _ = res["cache-rm"]
    assert rc == 2 and "removing the run failed" in err and "use a writable folder" in err
    assert tree_checksums(ro) == before


# -- 67, 68: fp16 ------------------------------------------------------------------------------


@pytest.mark.slow  # builds a tiny timm ResNet-18 (timm import)
def test_67_fp16_on_cpu_runs_finite_and_records_dtype(tmp_path, capsys):
    rc, out, err = medprobe(capsys, "extract", "-m", "resnet18", "-d", "synthetic:lesions?n=16&size=32", "--tiny",
                            "--dtype", "fp16", "--device", "cpu", "--store", tmp_path, "--json")
    assert rc == 0, err
    run = Run.open(json.loads(out)["run"])
    assert run.manifest["dtype"] == "float16" and run.verify() == []
    assert all(np.isfinite(np.asarray(x)).all() for _, _, x in run.iter_features())


def test_68_fp16_on_a_model_whose_forward_does_not_cast_is_one_line(base, tmp_path, capsys):
    out = tmp_path / "runs"
    kept = copy_run(base, out)
    before = tree_checksums(kept)
    rc, _, err = medprobe(capsys, "extract", "-m", MODEL, "-d", DATA, "--tiny", "--batch-size", BATCH, "--dtype", "fp16",
                          "--device", "cpu", "--store", out)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("Error: model 'example-cnn' (adapter 'example_cnn', dtype float16, device cpu): forward pass failed "
                          "before the first selected layer 'stage.0' (stages.0) ran: RuntimeError: ")
    assert "rerun with --dtype fp32, or cast the inputs in adapter 'example_cnn'" in err
    assert tree_checksums(kept) == before


# -- 69: NaN/Inf features from a model ---------------------------------------------------------


def test_69_non_finite_features_from_a_model_are_named(base, tmp_path):
    import torch

    from medprobe.features.capture import CaptureError
    from medprobe.models.prepare import load_model

    loaded = load_model(MODEL, tiny=True)
    with torch.no_grad():
        for p in dict(loaded.model.named_modules())["stages.1"].parameters():
            p.fill_(float("inf"))
    kept = copy_run(base, tmp_path / "runs")
    before = tree_checksums(kept)
    with pytest.raises(CaptureError) as info:  # (into another folder: same card and weights label -> same run key)
        extract(loaded, DATA, tmp_path / "inf", batch_size=BATCH, progress=False)
    msg = str(info.value)
    assert msg.startswith("model 'example-cnn' (float32): non-finite features in stage.1/image-mean: samples [")
    assert "rerun with --dtype bf16 or --dtype fp32" in msg and "completed shards are kept in" in msg
    assert tree_checksums(kept) == before


# -- readout cls on a CNN ----------------------------------------------------------------------


@pytest.mark.parametrize("readout, expected", [
    ("cls", "model 'example-cnn': readout cls applies to no selected layer (4 layers, "),
    ("last-token", "model 'example-cnn': readout last-token applies to no selected layer (a vision-only model has no LLM layers)"),
])
def test_readout_that_applies_to_no_layer_leaves_nothing(tmp_path, capsys, readout, expected):
    out = tmp_path / "runs"
    rc, _, err = medprobe(capsys, "extract", "-m", MODEL, "-d", DATA, "--tiny", "--readout", readout, "--store", out)
    assert rc == 2 and err == f"Error: {err[7:]}" and expected in err and "use --readout image-mean" in err
    assert not out.exists()
