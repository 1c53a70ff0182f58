"""Fault cases of the feature store: damaged shards, feature files and manifests, kills and
concurrent writers (docs/reliability.md, "Store, extraction and probing"; corpus rows in the test
names). Every case asserts the exact outcome: the error names the file and field, the exit code,
and that nothing previously written changed (checksums of every file before / after).

Tiny random example CNN on the synthetic lesion set: pipeline checks, not findings.
"""

from __future__ import annotations

from medprobe.tasks.pipeline import probe_dir
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _store_util import (BATCH, extract_tiny, DATA, MODEL, copy_run, edit_manifest, env, features_bytes, flip_float, medprobe,
                         tree_checksums, truncate)
from medprobe.features.store import Run, StoreWarning


def _interrupted(root: Path, at_batch: int) -> Path:
    def stop(batch_no):
        if batch_no == at_batch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_tiny(root, on_batch=stop)
    return next(p for p in root.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """Interrupted after batch 17: shards 0 and 1 (rows 0-32) recorded, 16 rows missing."""
    run_dir = _interrupted(tmp_path_factory.mktemp("partial"), 17)
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["rows_done"] == 32 and [s["file"] for s in m["shards"]] == ["shards/shard-000000.safetensors",
                                                                        "shards/shard-000001.safetensors"]
    return run_dir


@pytest.fixture(scope="module")
def unfinalized(tmp_path_factory):
    """Interrupted after the last batch: every shard recorded, finalize never ran."""
    run_dir = _interrupted(tmp_path_factory.mktemp("unfinalized"), 23)
    assert json.loads((run_dir / "manifest.json").read_text())["rows_done"] == 48
    return run_dir


@pytest.fixture
def run_copy(base, tmp_path):
    return copy_run(base, tmp_path)


def _legacy(m):
    """What a schema-1 manifest (written before manifest checksums) looks like."""
    for key in ("schema", "manifest_sha256"):
        m.pop(key, None)
    for entry in [*m.get("features", []), *m.get("shards", []), m.get("samples_file") or {}]:
        entry.pop("bytes", None)


# -- 37: kill -9 + resume, at three points -----------------------------------------------------

KILL = """
import os, signal, sys
from medprobe.features.extract import extract
def kill(batch_no):
    if batch_no == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
extract("example-cnn", "synthetic:lesions?n=48&size=32", sys.argv[1], tiny=True, batch_size=2, progress=False, on_batch=kill)
"""


@pytest.mark.slow  # a child python per point (torch import): ~4 s each idle, more on a shared box
@pytest.mark.parametrize("at_batch, kept_rows", [(3, 0), (7, 16), (23, 48)], ids=["mid-shard", "after-shard", "before-finalize"])
def test_37_sigkill_then_resume_is_bit_identical(tmp_path, reference, at_batch, kept_rows):
    proc = subprocess.run([sys.executable, "-c", KILL, str(tmp_path), str(at_batch)], capture_output=True, env=env(), timeout=300)
    assert proc.returncode == -signal.SIGKILL
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "incomplete" and m["rows_done"] == kept_rows
    computed = []
    run = extract_tiny(tmp_path, on_batch=computed.append)
    assert len(computed) == (48 - kept_rows) // BATCH  # nothing recorded was recomputed
    assert features_bytes(run) == reference and run.verify() == []


# -- 38: two concurrent extracts (one with --no-resume) ----------------------------------------


@pytest.mark.slow  # two child pythons
def test_38_concurrent_extracts_both_succeed_identically(tmp_path, reference):
    cmd = [sys.executable, "-m", "medprobe.cli", "extract", "-m", MODEL, "-d", DATA, "--tiny", "--batch-size", str(BATCH),
           "--store", str(tmp_path), "--json"]
    procs = [subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
             for extra in ([], ["--no-resume"])]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    paths = {json.loads(o[0])["run"] for o in outs}
    assert len(paths) == 1 and len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1
    run = Run.open(paths.pop())
    assert run.verify() == [] and features_bytes(run) == reference


# -- 39-42, 52: damaged feature / samples files -------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), 0.5], ids=["39-nan", "40-finite"])
def test_39_40_changed_feature_file_is_refused_by_verify_and_probe(run_copy, capsys, value):
    target = run_copy / "features" / "stage.2__image-mean.safetensors"
    flip_float(target, value)
    before = tree_checksums(run_copy)
    rc, _, err = medprobe(capsys, "cache", "verify", run_copy)
    assert rc == 1 and f"{target}: checksum mismatch" in err
    rc, out, err = medprobe(capsys, "probe", run_copy)
    assert rc == 2 and f"{target}: checksum mismatch (content changed since it was recorded)" in err
    assert "rerun the same `medprobe extract` command" in err and "Traceback" not in err
    assert not (run_copy / "probes").exists() and tree_checksums(run_copy) == before


@pytest.mark.parametrize("schema", ["schema2", "schema1"])
def test_41_truncated_feature_file_is_named(base, tmp_path, capsys, schema):
    run_dir = copy_run(base, tmp_path)
    if schema == "schema1":
        edit_manifest(run_dir, _legacy)
    target = run_dir / "features" / "head__image-mean.safetensors"
    truncate(target, 64)
    before = tree_checksums(run_dir)
    rc, _, err = medprobe(capsys, "probe", run_dir)
    expected = "6160 bytes, 6224 recorded (truncated" if schema == "schema2" else "truncated (6160 bytes, its header describes 6224)"
    assert rc == 2 and f"{target}: {expected}" in err and "mmap" not in err
    rc, _, err = medprobe(capsys, "cache", "verify", run_dir)
    assert rc == 1 and str(target) in err
    assert tree_checksums(run_dir) == before


@pytest.mark.parametrize("how", ["empty", "deleted"])
def test_42_empty_or_deleted_feature_file_is_named(run_copy, capsys, how):
    target = run_copy / "features" / "stage.0__image-mean.safetensors"
    if how == "empty":
        target.write_bytes(b"")
    else:
        target.unlink()
    before = tree_checksums(run_copy)
    rc, _, err = medprobe(capsys, "probe", run_copy)
    assert rc == 2 and (f"{target}: 0 bytes, 1616 recorded" if how == "empty" else f"{target}: missing") in err
    assert tree_checksums(run_copy) == before


def test_52_changed_samples_file_is_named(run_copy, capsys):
    target = run_copy / "samples.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] = (data[-1] + 1) % 3  # one split code
    target.write_bytes(bytes(data))
    before = tree_checksums(run_copy)
    rc, _, err = medprobe(capsys, "probe", run_copy)
    assert rc == 2 and f"{target}: checksum mismatch" in err
    rc, _, err = medprobe(capsys, "cache", "verify", run_copy)
    assert rc == 1 and f"{target}: checksum mismatch" in err
    assert tree_checksums(run_copy) == before


# -- 43, 44: damaged shards of an interrupted run ----------------------------------------------


def test_43_corrupted_shard_is_recomputed_on_resume(partial, tmp_path, reference):
    run_dir = copy_run(partial, tmp_path)
    flip_float(run_dir / "shards" / "shard-000001.safetensors", 123.0)
    computed = []
    with pytest.warns(StoreWarning, match=r"shard-000001\.safetensors: checksum mismatch .*recomputing rows 16-32 "
                                          r"\(1 shard\(s\) dropped, rows 0-16 kept\)"):
        run = extract_tiny(tmp_path, on_batch=computed.append)
    assert len(computed) == 16  # rows 16-48: the bad shard's and the missing ones, not shard 0's
    assert features_bytes(run) == reference and run.verify() == []


@pytest.mark.parametrize("schema", ["schema2", "schema1"])
def test_44_truncated_shard_is_named_and_recomputed(partial, tmp_path, reference, schema):
    run_dir = copy_run(partial, tmp_path)
    if schema == "schema1":
        edit_manifest(run_dir, _legacy)
    truncate(run_dir / "shards" / "shard-000000.safetensors", 100)
    computed = []
    with pytest.warns(StoreWarning, match=r"shard-000000\.safetensors: .*truncated.*recomputing rows 0-32"):
        run = extract_tiny(tmp_path, on_batch=computed.append)
    assert len(computed) == 24
    assert features_bytes(run) == reference and run.verify() == []
    again = []
    extract_tiny(tmp_path, on_batch=again.append)  # reruns reuse it: the damage is gone for good
    assert again == []


def test_stray_tmp_from_a_kill_during_finalize_is_removed(unfinalized, tmp_path, reference):
    run_dir = copy_run(unfinalized, tmp_path)
    (run_dir / "features").mkdir()
    stray = [run_dir / "features" / ".stage.0__image-mean.safetensors.k1ll3d.tmp", run_dir / ".manifest.json.k1ll3d.tmp"]
    for f in stray:
        f.write_bytes(b"half a file")
    computed = []
    run = extract_tiny(tmp_path, on_batch=computed.append)
    assert computed == [] and not any(f.exists() for f in stray)
    assert not list(run_dir.rglob("*.tmp")) and features_bytes(run) == reference


# -- 45-49: damaged manifests ------------------------------------------------------------------


def _features_removed(m):
    del m["features"]


def _features_string(m):
    m["features"] = "stage.0/image-mean"


def _classes_reversed(m):
    m["dataset"]["classes"].reverse()


def _ids_cut(m):
    m["dataset"]["sample_ids"] = m["dataset"]["sample_ids"][:24]


MANIFEST_FAULTS = {
    "46-classes-reversed": (_classes_reversed, "manifest.json: checksum mismatch: the manifest was changed after medprobe wrote it"),
    "47-features-removed": (_features_removed, "manifest.json: field 'features' is missing"),
    "48-features-wrong-type": (_features_string, "manifest.json: field 'features' must be a list of feature-file records, got str"),
    "49-sample-ids-cut": (_ids_cut, "manifest.json: field 'dataset.sample_ids' holds 24 ids that do not match dataset.sample_ids_sha256"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_FAULTS))
def test_46_49_damaged_manifest_is_a_named_error(run_copy, capsys, case):
    change, message = MANIFEST_FAULTS[case]
    edit_manifest(run_copy, change)
    before = tree_checksums(run_copy)
    rc, _, err = medprobe(capsys, "cache", "verify", run_copy)
    assert rc == 1 and f"{run_copy}/{message}" in err
    rc, _, err = medprobe(capsys, "probe", run_copy)
    assert rc == 2 and f"{run_copy}/{message}" in err and "Traceback" not in err
    rc, out, err = medprobe(capsys, "cache", "ls", "--store", run_copy.parent)  # listed as a problem, never skipped silently
    assert rc == 0 and f"warning: {run_copy}: not listed, it cannot be opened: " in err and message in err
    assert run_copy.name not in out
    assert tree_checksums(run_copy) == before


def test_45_invalid_json_manifest_is_named_by_every_command(run_copy, tmp_path, capsys, reference):
    (run_copy / "manifest.json").write_text('{"format": "medprobe.run/1", ')
    before = tree_checksums(run_copy)
    message = f"{run_copy}/manifest.json: corrupt record, not valid JSON"
    rc, _, err = medprobe(capsys, "cache", "verify", run_copy)
    assert rc == 1 and message in err
    rc, _, err = medprobe(capsys, "probe", run_copy)
    assert rc == 2 and message in err
    args = ["extract", "-m", MODEL, "-d", DATA, "--tiny", "--batch-size", str(BATCH), "--store", tmp_path]
    rc, _, err = medprobe(capsys, *args)
    assert rc == 2 and message in err and "--no-resume" in err
    assert tree_checksums(run_copy) == before
    rc, _, err = medprobe(capsys, *args, "--no-resume")  # the way out the message names
    assert rc == 0 and features_bytes(Run.open(run_copy)) == reference


def test_schema1_run_is_read_and_results_say_unverified(run_copy, capsys):
    """A run written before manifest checksums is still read (reused, probed), marked unverified;
    the checks that need no checksum (sample ids hash, sizes, shapes) still apply."""
    edit_manifest(run_copy, _legacy)
    rc, out, _ = medprobe(capsys, "cache", "verify", run_copy)
    assert rc == 0 and "ok (unverified: manifest written before manifest checksums (schema 1)" in out
    rc, _, err = medprobe(capsys, "probe", run_copy, "--no-controls")
    assert rc == 0, err
    saved = json.loads((probe_dir(Run.open(run_copy), "linear") / "results.json").read_text())
    assert saved["settings"]["input"]["status"] == "unverified" and "schema 1" in saved["settings"]["input"]["reasons"][0]
    computed = []
    reused = extract_tiny(run_copy.parent, on_batch=computed.append)
    assert computed == [] and reused.path == run_copy and reused.unverified
    edit_manifest(run_copy, _ids_cut)
    rc, _, err = medprobe(capsys, "cache", "verify", run_copy)
    assert rc == 1 and "holds 24 ids that do not match" in err


def test_checksummed_run_results_say_verified(run_copy):
    from medprobe.tasks.pipeline import probe_run

    results = probe_run(run_copy, "linear", controls=False)
    assert results["linear"].settings["input"] == {"run_key": Run.open(run_copy).key, "status": "verified", "reasons": []}


# -- 53: probe results corrupted -> report re-probes -------------------------------------------


def test_53_corrupted_probe_results_are_recomputed_by_report(run_copy, tmp_path, capsys):
    rc, _, err = medprobe(capsys, "probe", run_copy)
    assert rc == 0, err
    results = probe_dir(Run.open(run_copy), "linear") / "results.json"
    good = json.loads(results.read_text())
    results.write_text("{ truncated")
    features_before = {k: v for k, v in tree_checksums(run_copy).items() if not k.startswith("probes/")}
    rc, _, err = medprobe(capsys, "report", run_copy, "--out", tmp_path / "rep")
    assert rc == 0, err
    again = json.loads(results.read_text())
    assert again["layers"] == good["layers"]  # retrained, same seed: the same results
    assert {k: v for k, v in tree_checksums(run_copy).items() if not k.startswith("probes/")} == features_before
    assert (tmp_path / "rep" / "report.json").is_file()


def test_damaged_complete_run_is_recomputed_byextract_tiny(run_copy, reference):
    flip_float(run_copy / "features" / "stage.1__image-mean.safetensors", 7.0)
    with pytest.warns(StoreWarning, match=r"stage\.1__image-mean\.safetensors: checksum mismatch.*recomputing the run"):
        run = extract_tiny(run_copy.parent)
    assert features_bytes(run) == reference and run.verify() == []


def test_43_corrupted_rank_shard_is_recomputed_on_rank_resume(tmp_path, reference):
    """Data-parallel extraction: a rank's recorded shard that changed is dropped and its batches
    computed again when that rank reruns; the merged run is bit-identical."""
    first = extract_tiny(tmp_path, world_size=2, rank=0)
    assert not first.complete
    rank_dir = first.path / "ranks" / "rank-0"
    flip_float(rank_dir / "shard-000000.safetensors", -3.0)
    computed = []
    with pytest.warns(StoreWarning, match=r"rank-0/shard-000000\.safetensors: checksum mismatch .*recomputing its batches \[0, 2, 4"):
        extract_tiny(tmp_path, world_size=2, rank=0, on_batch=computed.append)
    assert computed == [0, 2, 4, 6, 8, 10, 12, 14]  # that shard's batches only
    run = extract_tiny(tmp_path, world_size=2, rank=1)
    assert run.complete and features_bytes(run) == reference and run.verify() == []


def test_44_cli_says_which_shard_it_recomputes(partial, tmp_path, capsys, reference):
    run_dir = copy_run(partial, tmp_path)
    truncate(run_dir / "shards" / "shard-000001.safetensors", 10)
    rc, _, err = medprobe(capsys, "extract", "-m", MODEL, "-d", DATA, "--tiny", "--batch-size", str(BATCH), "--store", tmp_path)
    assert rc == 0 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"warning: {run_dir}/shards/shard-000001.safetensors: ") and "recomputing rows 16-32" in err
    assert features_bytes(Run.open(run_dir)) == reference
