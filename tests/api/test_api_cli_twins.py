"""Each public function against its CLI twin: same inputs give the same content.

Timestamps, the recorded command line and output paths are the only allowed differences
(:func:`comparable`). Probing and comparing are recomputed on both sides, so these tests also
check that the pipeline is deterministic.
"""

from __future__ import annotations

from medprobe.tasks.pipeline import probe_dir
import json
import shutil

import numpy as np

import medprobe as mp

from .conftest import DATA, cli_json, cli_ok, comparable


def test_list_models(tmp_path):
    for kwargs, args in (
        ({}, []),
        ({"kind": "mllm", "family": "qwen*"}, ["--kind", "mllm", "--family", "qwen*"]),
        ({"pattern": "medgemma*"}, ["medgemma*"]),
        ({"kind": "baseline"}, ["--kind", "baseline"]),
    ):
        api = [c.to_dict() for c in mp.list_models(**kwargs)]
        assert api, kwargs
        assert api == cli_json(["models", "list", *args, "--json"]), kwargs


def test_get_card():
    card = mp.get_card("lingshu-7b")
    cli = cli_json(["models", "show", "lingshu-7b", "--json"])
    assert cli.pop("registered_by")
    assert card.to_dict() == cli


def test_layer_map():
    lmap = mp.layer_map("lingshu-7b", tiny=True, select="vision.*,connector")
    cli = cli_json(["models", "layers", "lingshu-7b", "--tiny", "--select", "vision.*,connector", "--json"])
    assert cli.pop("tiny") is True
    assert lmap.to_dict() == cli
    assert {s.stage for s in lmap} == {"vision", "connector"}


def test_list_plugins_and_datasets():
    assert mp.list_plugins().to_dict() == cli_json(["plugins", "--json"])
    assert mp.list_plugins(errors_only=True).to_dict() == cli_json(["plugins", "--errors", "--json"])
    assert [d.to_dict() for d in mp.list_datasets()] == cli_json(["datasets", "list", "--json"])


def test_dataset():
    ds = mp.dataset(DATA, seed=1, limit=30)
    info = ds.info()
    info["split_ids"] = ds.split_ids()
    assert json.loads(json.dumps(info, default=str)) == cli_json(["datasets", "show", DATA, "--seed", "1", "--limit", "30", "--json"])
    assert len(ds) == 30


def test_extract(api_runs, tmp_path):
    """The CLI's run of the same model and data has the same run key and the same features."""
    cli = cli_json(["extract", "--model", "example-cnn", "--dataset", DATA, "--out", str(tmp_path), "--tiny",
                    "--batch-size", "8", "--json"])  # fmt: skip
    run = mp.open_run(cli["run"])
    api = api_runs.cnn
    assert run.key == api.key and run.path.name == api.path.name
    assert run.feature_keys == api.feature_keys
    for layer, readout in api.feature_keys:
        np.testing.assert_array_equal(run.features(layer, readout), api.features(layer, readout))
    loaded = mp.load("example-cnn", tiny=True, device="cpu", dtype="fp32")  # what --tiny loads
    assert (loaded.device, loaded.dtype, loaded.weights) == ("cpu", "float32", "tiny-random(seed=0)")
    assert mp.extract(loaded, DATA, tmp_path, batch_size=8, progress=False).key == run.key


def test_cache_functions(api_runs, tmp_path):
    root = tmp_path / "runs"
    a = shutil.copytree(api_runs.cnn.path, root / api_runs.cnn.path.name)
    b = shutil.copytree(api_runs.mllm.path, root / api_runs.mllm.path.name)
    for extra in ("probes",):
        shutil.rmtree(a / extra, ignore_errors=True)
        shutil.rmtree(b / extra, ignore_errors=True)
    listed = cli_json(["cache", "ls", "--root", str(root), "--json"])
    assert [r["run"] for r in listed] == [r.path.name for r in mp.list_runs(root)]
    assert [r["model"] for r in listed] == [mp.run_info(r).model for r in mp.list_runs(root)]
    assert mp.run_info(a).to_dict() == cli_json(["cache", "info", str(a), "--json"])
    assert mp.verify_run(a) == [] and cli_ok(["cache", "verify", str(a)]).strip().endswith("ok")
    assert mp.remove_run(a) == a and not a.exists()
    cli_ok(["cache", "rm", str(b), "--yes"])
    assert not b.exists() and mp.list_runs(root) == []


def test_probe(api_runs, tmp_path):
    """Probing two copies of one run, once through the API and once through the CLI."""
    src = api_runs.mllm.path
    one = shutil.copytree(src, tmp_path / "one" / src.name, ignore=shutil.ignore_patterns("probes", ".lock"))
    two = shutil.copytree(src, tmp_path / "two" / src.name, ignore=shutil.ignore_patterns("probes", ".lock"))
    api = mp.probe(one, probe="linear", seed=0)["linear"].to_dict()
    cli = cli_json(["probe", str(two), "--probe", "linear", "--seed", "0", "--json"])["linear"]
    api.pop("elapsed_s"), cli.pop("elapsed_s")
    assert api == cli
    assert (probe_dir(mp.open_run(one), "linear", 0) / "results.json").is_file()


def test_report(api_runs, api_report, tmp_path):
    runs = [str(api_runs.mllm.path), str(api_runs.cnn.path)]
    out = tmp_path / "cli-report"
    cli_ok(["report", *runs, "--out", str(out)])
    cli = json.loads((out / "report.json").read_text())
    assert comparable(api_report.to_dict()) == comparable(cli)
    with_baseline = mp.report([api_runs.mllm], baseline=api_runs.cnn)
    assert [m.kind for m in with_baseline.models] == ["mllm", "baseline"] and with_baseline.path is None


def test_compare(tmp_path):
    a, b = tmp_path / "api", tmp_path / "cli"
    api = mp.compare("medgemma-4b,example-cnn", DATA, a, tiny=True, batch_size=8, progress=False)
    cli_ok(["compare", "--models", "medgemma-4b,example-cnn", "--dataset", DATA, "--out", str(b), "--tiny"])
    cli = json.loads((b / "report.json").read_text())
    assert api.model_ids == ["medgemma-4b", "example-cnn"]
    assert api.to_dict() == json.loads((a / "report.json").read_text())
    assert comparable(api.to_dict(), a, b) == comparable(cli, a, b)
