"""Fault corpus rows 54-63 and 75: broken plugins, unknown names and selections that match
nothing. A broken plugin is isolated (recorded, shown by ``medprobe plugins``, never takes the
CLI down); unknown names get a did-you-mean; an extraction that cannot start writes nothing."""

from __future__ import annotations

import json

import pytest

from faultkit import digest, image_folder, run_subprocess

RAISES = """
raise RuntimeError("boom at import")
"""

BADHOOK = """
from medprobe import hookimpl

@hookimpl
def register_datasets(register):
    register("csv", "os:system", "hijack the csv scheme")
    raise ValueError("boom in hook")
"""

MISSPELLED = """
from medprobe import hookimpl
from medprobe.cards import ModelCard

@hookimpl
def register_modelz(register):
    register(ModelCard(id="never-registered", kind="baseline", family="example_cnn", loader="stock"))

@hookimpl
def register_datasets(register):
    register("sneaky", "os:system", "must not be registered: the plugin is rejected")
"""

DUPLICATE = """
from medprobe import hookimpl
from medprobe.cards import ModelCard

@hookimpl
def register_models(register):
    register(ModelCard(id="resnet18", kind="baseline", family="example_cnn", loader="stock", title="impostor"))
"""

BADLAYER = """
from medprobe import hookimpl
from medprobe.cards import ModelCard

@hookimpl
def register_models(register):
    register(ModelCard(id="badlayer-cnn", kind="baseline", family="badlayer_cnn", loader="stock"))

@hookimpl
def register_adapters(register):
    register("badlayer_cnn", "mpf_p_badlayer_plugin:BadLayerAdapter", "layer paths that do not exist")

from medprobe_example_plugin.adapter import ExampleCNNAdapter
from medprobe.layermap import LayerGroup

class BadLayerAdapter(ExampleCNNAdapter):
    family = "badlayer_cnn"

    def layer_groups(self, card, config):
        return [LayerGroup("cnn", "stage.{i}", ("stagez",), count=3, layout="NCHW")]
"""

MARKER = """
import os
open(os.environ["MPF_MARKER"], "a").write("imported\\n")
"""


def _plugins_json(medprobe):
    result = medprobe("plugins", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def _row(listing, name):
    return next(p for p in listing["plugins"] if p["name"] == name)


def test_row54_plugin_raising_at_import_is_isolated(plugin_env, medprobe):
    plugin_env({"p_raise": RAISES})
    listing = _plugins_json(medprobe)
    assert _row(listing, "p_raise")["error"] == "RuntimeError: boom at import"
    assert _row(listing, "zoo")["error"] is None  # the others still load
    result = medprobe("plugins")
    assert result.code == 0 and any(l.startswith("p_raise ") and "RuntimeError: boom at import" in l for l in result.out.splitlines())
    result = medprobe("models", "show", "resnet-18x")
    assert result.code == 2 and "Some plugins failed to load (see `medprobe plugins`):" in result.err
    assert "plugin 'p_raise' (mpf-p_raise) failed in import: RuntimeError: boom at import" in result.err


def test_row55_entry_point_to_a_missing_module(plugin_env, medprobe, tmp_path, monkeypatch):
    from medprobe import plugins as plugin_mod
    from medprobe.testing import fake_distribution

    eps = list(plugin_mod.entry_points())
    eps += fake_distribution(tmp_path / "m", "mpf-missing", {}, {"p_missing": "mpf_no_such_module"})
    monkeypatch.setattr(plugin_mod, "entry_points", lambda: eps)
    plugin_mod.set_plugins(None)
    listing = _plugins_json(medprobe)
    assert _row(listing, "p_missing")["error"] == "ModuleNotFoundError: No module named 'mpf_no_such_module'"
    assert medprobe("datasets", "list").code == 0


def test_row56_hook_that_raises_cannot_hijack_a_scheme(plugin_env, medprobe, tmp_path):
    plugin_env({"p_badhook": BADHOOK})
    listing = _plugins_json(medprobe)
    hook_errors = [e for e in listing["errors"] if e["plugin"] == "p_badhook" and e["stage"] == "register_datasets"]
    assert [e["error"] for e in hook_errors] == ["ValueError: boom in hook"]
    conflict = [e for e in listing["errors"] if e["stage"] == "duplicate"]
    assert len(conflict) == 1 and "duplicate dataset loader 'csv' registered by" in conflict[0]["error"]
    # neither loader is used: the spec fails naming both plugins and the way out, os.system never runs
    image_folder(tmp_path / "s")
    (tmp_path / "s" / "m.csv").write_text("path,label\na/ok_0.png,a\nb/ok_0.png,b\n")
    result = medprobe("datasets", "show", f"csv:{tmp_path / 's' / 'm.csv'}")
    assert result.code == 2 and result.err.startswith("Error: duplicate dataset loader 'csv' registered by ")
    assert "p_badhook" in result.err and "datasets" in result.err
    assert result.err.rstrip().endswith("uninstall one of the distributions or block one plugin with MEDPROBE_BLOCK_PLUGINS")


def test_row57_misspelled_hook_rejects_the_plugin(plugin_env, medprobe):
    plugin_env({"p_badsig": MISSPELLED})
    listing = _plugins_json(medprobe)
    row = _row(listing, "p_badsig")
    assert row["hooks"] == []
    assert row["error"] == (
        "unknown hook(s) 'register_modelz' (did you mean 'register_models'?): not a medprobe hook, so the plugin is "
        "rejected (none of its hooks run); rename it to one of register_adapters, register_commands, register_datasets, "
        "register_exporters, register_metrics, register_models, register_probes")
    assert {"plugin": "p_badsig", "distribution": "mpf-p_badsig", "stage": "hook check", "error": row["error"]} in listing["errors"]
    from medprobe.api import list_datasets

    assert "sneaky" not in {d.scheme for d in list_datasets()}  # its correctly named hook did not run either
    table = medprobe("plugins").out
    assert any(l.startswith("p_badsig ") and "unknown hook(s) 'register_modelz'" in l for l in table.splitlines())
    # strict mode (plugin authors, CI) raises pluggy's own validation error
    import pluggy

    from medprobe import plugins as plugin_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDPROBE_STRICT_PLUGINS", "1")
        with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_modelz'"):
            plugin_mod.discover()


def test_row58_duplicate_model_id_is_refused_naming_both_plugins(plugin_env, medprobe, tmp_path):
    plugin_env({"p_dup": DUPLICATE})
    listing = _plugins_json(medprobe)
    (err,) = [e for e in listing["errors"] if e["stage"] == "duplicate"]
    assert "duplicate model 'resnet18' registered by" in err["error"] and "p_dup" in err["error"]
    result = medprobe("extract", "--model", "resnet18", "--tiny", "--dataset", "synthetic:lesions?n=12", "--store", tmp_path / "r")
    assert result.code == 2 and result.err.startswith("Error: duplicate model 'resnet18' registered by ")
    assert "p_dup" in result.err and "zoo" in result.err and "MEDPROBE_BLOCK_PLUGINS" in result.err
    assert not (tmp_path / "r").exists()


def test_row59_layer_path_that_does_not_resolve(plugin_env, medprobe):
    plugin_env({"p_badlayer": BADLAYER})
    result = medprobe("models", "layers", "badlayer-cnn", "--tiny")
    assert result.code == 2 and result.err == (
        "Error: layer map of 'badlayer-cnn' is invalid:\n"
        "  - cnn: none of the paths ['stagez'] exists; nearest module names: ['stages', 'stages.2', 'stages.1']\n")


def _extract(medprobe, tmp_path, *extra):
    data = image_folder(tmp_path / "img", {"a": 4, "b": 4})
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    (runs / "keep.txt").write_text("written before")
    before = digest(runs)
    result = medprobe("extract", "--model", "example-cnn", "--tiny", "--dataset", f"imagefolder:{data}", "--store", runs, *extra)
    return result, before, digest(runs)


def test_row60_layers_matching_nothing(tmp_path, medprobe):
    result, before, after = _extract(medprobe, tmp_path, "--layers", "vision.*,stage.9")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err == ("Error: --layers: pattern 'vision.*' matches none of the layers of 'example-cnn'. Did you mean "
                          "'vision'? Its layers: stage.0, stage.1, stage.2, head; stages: cnn, head, vision (list them "
                          "with 'medprobe models layers example-cnn --tiny').\n")
    assert after == before  # nothing written


def test_row61_readout_that_applies_to_no_selected_layer(tmp_path, medprobe):
    result, before, after = _extract(medprobe, tmp_path, "--readout", "cls")
    assert result.code == 2 and "Traceback" not in result.err
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("Error: model 'example-cnn': readout cls applies to no selected layer (4 layers, ")
    assert result.err.rstrip().endswith("use --readout image-mean (or select other --layers)")
    assert after == before  # no empty incomplete run left behind


def test_row62_unknown_model_id_suggests_the_close_one(medprobe, tmp_path):
    result = medprobe("extract", "--model", "resnet-18", "--tiny", "--dataset", "synthetic:lesions?n=12", "--store", tmp_path / "r")
    assert result.code == 2 and result.err.startswith("Error: model 'resnet-18' not found; did you mean: resnet18, ")
    assert len(result.err.splitlines()) == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_row63_unknown_dataset_scheme_suggests_the_close_one(medprobe, tmp_path):
    result = medprobe("datasets", "show", f"imgfolder:{tmp_path}")
    assert result.code == 2 and result.err == "Error: dataset loader 'imgfolder' not found; did you mean: imagefolder?\n"


def test_row75_plugin_code_runs_on_help_by_design_and_the_block_list_stops_it(tmp_path):
    from medprobe.testing import fake_distribution

    fake_distribution(tmp_path / "mk", "mpf-marker", {"mpf_marker_plugin": MARKER}, {"p_marker": "mpf_marker_plugin"})
    marker = tmp_path / "marker.txt"
    env = {"MPF_MARKER": str(marker)}
    result = run_subprocess(["--help"], env=env)
    assert result.code == 0 and "Usage: medprobe" in result.out
    assert marker.read_text() == "imported\n"  # plugins are imported to add their commands (documented)
    marker.unlink()
    result = run_subprocess(["--help"], env={**env, "MEDPROBE_BLOCK_PLUGINS": "p_marker"})
    assert result.code == 0 and not marker.exists()
    result = run_subprocess(["--version"], env={**env, "MEDPROBE_LOAD_PLUGINS": ""})
    assert result.code == 0 and not marker.exists()
