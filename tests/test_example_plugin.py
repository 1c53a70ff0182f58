"""The example third-party plugin (examples/medprobe-example-plugin), pip-installed by `make`,
shows up with no code change and passes the conformance kit."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from medprobe.plugins import get_plugins, set_plugins


def test_example_plugin_is_discovered():
    set_plugins(None)
    state = get_plugins()
    info = {p.name: p for p in state.plugins}
    assert "example" in info, "run `make install` (it pip-installs examples/medprobe-example-plugin)"
    assert info["example"].distribution == "medprobe-example-plugin"
    assert info["example"].error is None
    from medprobe.cli import cli

    out = CliRunner().invoke(cli, ["models", "list", "example*", "--json"])
    assert out.exit_code == 0 and [c["id"] for c in json.loads(out.output)] == ["example-cnn"]
    out = CliRunner().invoke(cli, ["plugins", "--json"])
    assert "example" in {p["name"] for p in json.loads(out.output)["plugins"]}


def test_example_plugin_conformance(medprobe_conformance):
    report = medprobe_conformance("example-cnn")
    assert report.layers == 4 and report.features == 4


def test_example_capture_equals_manual_forward():
    from medprobe.features.capture import Capture
    from medprobe.testing import synthetic_images
    from medprobe.models.zoo import get_adapter
    from medprobe.models.prepare import load_model

    loaded = load_model("example-cnn", tiny=True)
    adapter = get_adapter("example_cnn")
    batch = adapter.preprocess(loaded, synthetic_images(3))
    with Capture(loaded.model, list(loaded.layer_map), ("image-mean",)) as cap:
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    with torch.no_grad():
        h = batch.inputs["pixel_values"]
        for i, stage in enumerate(loaded.model.stages):
            h = stage(h)
            assert torch.allclose(feats[(f"stage.{i}", "image-mean")], h.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(feats[("head", "image-mean")], h.mean(dim=(2, 3)), atol=1e-6)
