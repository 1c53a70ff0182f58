"""What a notebook user sees: a short repr of a run, one result for one probe."""

from __future__ import annotations

import shutil

import medprobe as mp
from medprobe.analysis.results import ProbeResults


def test_run_repr_is_short_and_names_card_dataset_key_rows_layers(api_runs):
    run = api_runs.cnn
    text = repr(run)
    assert len(text) < 300, text
    assert "card='example-cnn'" in text and f"key='{run.key[:12]}'" in text
    assert f"n={len(run.sample_ids)}" in text and f"layers={len(run.layers)}" in text and "complete" in text
    assert f"dataset='{run.manifest['dataset']['spec']}'" in text
    assert not any(sid in text for sid in run.sample_ids)
    assert repr(mp.open_run(run.path)) == text


def test_probe_returns_one_result_for_one_probe_and_a_dict_for_several(api_runs, tmp_path):
    src = api_runs.cnn.path
    run = shutil.copytree(src, tmp_path / src.name, ignore=shutil.ignore_patterns("probes", ".lock"))
    one = mp.probe(run, probe="linear", controls=False)
    assert isinstance(one, ProbeResults) and one.probe == "linear"
    assert isinstance(mp.probe(run, probe=["linear"], controls=False), ProbeResults)
    several = mp.probe(run, probe="linear,mlp", controls=False)
    assert isinstance(several, dict) and list(several) == ["linear", "mlp"]
    assert several["linear"].to_dict() == one.to_dict()  # the saved result, loaded
    assert list(mp.probe(run, probe="all", controls=False)) == ["linear", "mlp"]
