"""Feature store and extraction: manifest, run keys, resume after a kill, locking, verify, cache CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from medprobe.features.extract import extract
from medprobe.features.store import Run, StoreError

DATA = "synthetic:lesions?n=40&size=32"
MODEL = "example-cnn"  # the example plugin's CNN: fast, offline


def _features(run: Run) -> dict[str, bytes]:
    return {f"{l}/{r}": np.asarray(x).tobytes() for l, r, x in run.iter_features()}


def test_extract_writes_a_complete_run(tmp_path):
    run = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)
    assert run.complete and run.path.parent == tmp_path
    m = run.manifest
    assert m["run_key"] and len(m["run_key"]) == 64
    assert m["synthetic"] and any("tiny random" in r for r in m["synthetic_reasons"])
    assert any("synthetic dataset" in r for r in m["synthetic_reasons"])
    assert {"medprobe", "torch", "transformers", "timm", "open_clip_torch"} <= set(m["versions"])
    assert m["dataset"]["sample_ids_sha256"] and m["batch_size"] == 4 and m["dtype"] == "float32"
    assert run.feature_keys == [("stage.0", "image-mean"), ("stage.1", "image-mean"), ("stage.2", "image-mean"), ("head", "image-mean")]
    x = run.features("stage.1", "image-mean")
    assert isinstance(x, np.memmap) and x.shape == (40, 16) and x.dtype == np.float32
    assert run.labels.shape == (40,) and set(run.splits) <= {"train", "val", "test"}
    assert not run.verify()
    assert not (run.path / "shards").exists()


def test_rerun_reuses_and_is_bit_identical(tmp_path):
    first = extract(MODEL, DATA, tmp_path / "a", tiny=True, batch_size=4, progress=False)
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    again = extract(MODEL, DATA, tmp_path / "a", tiny=True, batch_size=4, progress=False)
    assert again.path == first.path and (again.path / "manifest.json").stat().st_mtime_ns == stamp
    fresh = extract(MODEL, DATA, tmp_path / "b", tiny=True, batch_size=4, progress=False)
    assert fresh.key == first.key and _features(fresh) == _features(first)


def test_changed_readout_or_layers_get_a_new_key(tmp_path):
    a = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)
    b = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, layers="stage.*", progress=False)
    c = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, readouts="image-mean", progress=False)
    d = extract(MODEL, "synthetic:lesions?n=40&size=48", tmp_path, tiny=True, batch_size=4, progress=False)
    assert len({a.key, b.key, c.key, d.key}) == 4
    assert len({a.path, b.path, c.path, d.path}) == 4


def test_a_misspelt_layer_pattern_is_refused_before_the_model_or_data_is_opened(tmp_path, monkeypatch):
    from medprobe.layermap import LayerPatternError
    from medprobe.models import prepare

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was prepared before the layer pattern was checked")

    monkeypatch.setattr(prepare, "prepare_model", must_not_load)
    with pytest.raises(LayerPatternError, match=r"'vison\.\*' matches no layer id of any model \(checked before "
                                                r"loading 'example-cnn'\)\. Did you mean 'vision\.\*'"):
        extract(MODEL, "imagefolder:/no/such/folder", tmp_path, tiny=True, layers="stage.*,vison.*", progress=False)
    assert not any(tmp_path.iterdir())


def test_batch_size_does_not_change_features(tmp_path):
    one = extract(MODEL, DATA, tmp_path / "1", tiny=True, batch_size=1, progress=False)
    eight = extract(MODEL, DATA, tmp_path / "8", tiny=True, batch_size=8, progress=False)
    for (lid, ro, x) in one.iter_features():
        np.testing.assert_allclose(x, eight.features(lid, ro), atol=1e-5)


def test_interrupted_run_resumes_bit_identical(tmp_path):
    reference = extract(MODEL, DATA, tmp_path / "ref", tiny=True, batch_size=2, progress=False)

    def interrupt(batch_no):
        if batch_no == 12:  # one shard (8 batches x 2 rows) is on disk by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(MODEL, DATA, tmp_path / "x", tiny=True, batch_size=2, progress=False, on_batch=interrupt)
    run_dir = next((tmp_path / "x").iterdir())
    partial = json.loads((run_dir / "manifest.json").read_text())
    assert partial["status"] == "incomplete" and partial["rows_done"] == 16
    with pytest.raises(StoreError, match="incomplete"):
        Run.open(run_dir).features("head")
    done_batches = []
    resumed = extract(MODEL, DATA, tmp_path / "x", tiny=True, batch_size=2, progress=False, on_batch=done_batches.append)
    assert len(done_batches) == 12  # only the 24 missing rows were computed
    assert _features(resumed) == _features(reference)


KILL_SCRIPT = """
import os, signal, sys
from medprobe.features.extract import extract
def kill(batch_no):
    if batch_no == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
extract("example-cnn", "synthetic:lesions?n=40&size=32", sys.argv[1], tiny=True, batch_size=2, progress=False, on_batch=kill)
"""


def test_sigkill_mid_run_then_resume(tmp_path):
    reference = extract(MODEL, DATA, tmp_path / "ref", tiny=True, batch_size=2, progress=False)
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), "17"], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    run_dir = next(out.iterdir())
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "incomplete"
    resumed = extract(MODEL, DATA, out, tiny=True, batch_size=2, progress=False)
    assert _features(resumed) == _features(reference)


def test_no_resume_starts_over(tmp_path):
    first = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)
    seen = []
    again = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False, resume=False, on_batch=seen.append)
    assert len(seen) == 10 and _features(again) == _features(first)


def test_second_process_waits_on_the_lock(tmp_path):
    from filelock import FileLock

    def interrupt(batch_no):
        if batch_no == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False, on_batch=interrupt)
    run_dir = next(tmp_path.iterdir())
    result = {}
    with FileLock(str(run_dir / ".lock")):
        t = threading.Thread(target=lambda: result.setdefault("run", extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)))
        t.start()
        time.sleep(1.0)
        assert t.is_alive()  # an incomplete run: blocked while another writer holds it
    t.join(60)
    assert result["run"].path == run_dir and result["run"].complete


def test_complete_run_is_reused_without_the_lock(tmp_path):
    from filelock import FileLock

    first = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)
    with FileLock(str(first.path / ".lock")):  # a complete run is read as it is: no waiting
        again = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)
    assert again.path == first.path and again.complete


def test_verify_detects_corruption_and_cache_cli(tmp_path):
    from medprobe.cli import cli

    run = extract(MODEL, DATA, tmp_path, tiny=True, batch_size=4, progress=False)
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "ls", "--store", str(tmp_path), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)[0]["model"] == MODEL
    out = runner.invoke(cli, ["cache", "info", str(run.path), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "complete"
    assert runner.invoke(cli, ["cache", "verify", str(run.path)]).exit_code == 0
    f = run.path / "features" / "stage.0__image-mean.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    out = runner.invoke(cli, ["cache", "verify", str(run.path)])
    assert out.exit_code == 1 and "checksum mismatch" in out.output
    out = runner.invoke(cli, ["cache", "rm", str(run.path), "--yes"])
    assert out.exit_code == 0 and not run.path.exists()
    with pytest.raises(StoreError, match="not a medprobe run"):
        Run.open(tmp_path)


def test_extract_cli(tmp_path):
    from medprobe.cli import cli

    out = CliRunner().invoke(
        cli, ["extract", "--model", MODEL, "--dataset", DATA, "--store", str(tmp_path), "--tiny", "--batch-size", "4", "--json"]
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["rows"] == 40 and summary["features"] == 4 and summary["synthetic"]
