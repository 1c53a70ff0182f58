"""The built-in analysis plugin registers its probes, score and exporters lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medprobe.plugins import discover
from medprobe.registry import resolve_factory


def test_registrations_resolve():
    state = discover()
    assert not [e for e in state.errors if e.plugin == "analysis"]
    assert {"linear", "mlp"} <= set(state.probes.names())
    assert "fhs" in state.metrics.names()
    assert {"json", "csv", "md", "html"} <= set(state.exporters.names())
    for reg, name in [
        (state.probes, "linear"),
        (state.probes, "mlp"),
        (state.metrics, "fhs"),
        (state.exporters, "html"),
    ]:
        entry = reg.entry(name)
        assert entry.origin.plugin == "analysis" and isinstance(entry.value, str) and entry.description
        assert callable(resolve_factory(entry.value))


def test_fhs_metric_on_a_report_entry():
    from medprobe.analysis.fhs import fhs_metric

    entry = {"p_final": 0.5, "p_final_n": 10, "layers": [
        {"id": "vision.00", "stage": "vision", "depth": 0.0, "readout": "image-mean", "probe": "linear", "accuracy": 0.5, "used": True},
        {"id": "vision.01", "stage": "vision", "depth": 0.5, "readout": "image-mean", "probe": "linear", "accuracy": 0.8, "used": True},
        {"id": "vision.01", "stage": "vision", "depth": 0.5, "readout": "image-mean", "probe": "mlp", "accuracy": 0.1, "used": True},
    ]}  # fmt: skip
    out = fhs_metric(entry, probe="linear")
    assert out["vision"]["layers"] == ["vision.00", "vision.01"]
    assert out["vision"]["growth"] == json.loads(json.dumps(out))["vision"]["growth"]


def test_light_imports():
    code = (
        "import medprobe.analysis, medprobe.analysis.plugin, medprobe.analysis.report, medprobe.analysis.exporters\n"
        "import sys, json; print(json.dumps(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_report_formats_come_from_the_exporter_registry(tmp_path, monkeypatch):
    """write_report resolves json/csv/md/html through register_exporters like any plugin format, and an
    unknown format fails before anything is written."""
    from medprobe.analysis import exporters
    from medprobe.registry import NotFoundError

    calls = []
    monkeypatch.setattr(exporters, "write_json", lambda report, out: calls.append("json") or out / "report.json")
    with pytest.raises(NotFoundError):
        exporters.write_report({"models": []}, tmp_path / "out", formats=("json", "nope"))
    assert calls == [] and not any((tmp_path / "out").iterdir())
    exporters.write_report({"models": []}, tmp_path / "out", formats=("json",))
    assert calls == ["json"]  # the registered "medprobe.analysis.exporters:write_json" resolves at call time
