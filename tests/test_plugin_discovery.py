"""Plugin discovery: fake entry points, isolation of broken plugins, allow/deny lists, duplicates."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from medprobe import plugins as plugin_mod
from medprobe.registry import DuplicateRegistrationError, NotFoundError
from medprobe.testing import fake_distribution

GOOD = """
from medprobe import hookimpl
from medprobe.cards import ModelCard

@hookimpl
def register_models(register):
    register(ModelCard(id="good-model", kind="baseline", family="good_family", loader="timm"))

@hookimpl
def register_adapters(register):
    register("good_family", "medprobe_example_plugin.adapter:ExampleCNNAdapter", "good")
"""

BROKEN_IMPORT = """
raise RuntimeError("boom at import")
"""

BROKEN_HOOK = """
from medprobe import hookimpl

@hookimpl
def register_models(register):
    raise ValueError("boom in hook")
"""

DUPLICATE = """
from medprobe import hookimpl
from medprobe.cards import ModelCard

@hookimpl
def register_models(register):
    register(ModelCard(id="good-model", kind="baseline", family="good_family", loader="timm"))
"""


@pytest.fixture
def fake_eps(tmp_path, monkeypatch):
    """Three distributions: a good plugin, one that fails at import, one whose hook raises."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the fake distributions leave with the test
    eps = []
    eps += fake_distribution(tmp_path / "a", "mp-good", {"mp_good_plugin": GOOD}, {"good": "mp_good_plugin"})
    eps += fake_distribution(tmp_path / "b", "mp-broken", {"mp_broken_plugin": BROKEN_IMPORT}, {"broken": "mp_broken_plugin"})
    eps += fake_distribution(tmp_path / "c", "mp-hookfail", {"mp_hookfail_plugin": BROKEN_HOOK}, {"hookfail": "mp_hookfail_plugin"})
    monkeypatch.setattr(plugin_mod, "entry_points", lambda: eps)
    for var in ("MEDPROBE_STRICT_PLUGINS", "MEDPROBE_LOAD_PLUGINS", "MEDPROBE_BLOCK_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    plugin_mod.set_plugins(None)
    yield eps
    plugin_mod.set_plugins(None)


def test_good_plugin_registers_through_entry_points(fake_eps):
    state = plugin_mod.discover()
    card = state.models.get("good-model")
    assert card.family == "good_family"
    entry = state.models.entry("good-model")
    assert entry.origin.distribution == "mp-good" and entry.origin.plugin == "good"
    assert "good_family" in state.adapters
    info = {p.name: p for p in state.plugins}
    assert info["good"].hooks == ["register_adapters", "register_models"]
    assert info["good"].version == "0.0.1"


def test_broken_plugins_are_recorded_not_raised(fake_eps):
    state = plugin_mod.discover()
    stages = {(e.plugin, e.stage) for e in state.errors}
    assert ("broken", "import") in stages
    assert ("hookfail", "register_models") in stages
    assert "good-model" in state.models
    msg = next(str(e) for e in state.errors if e.plugin == "broken")
    assert "boom at import" in msg and "mp-broken" in msg


def test_not_found_error_names_broken_plugins(fake_eps):
    state = plugin_mod.discover()
    with pytest.raises(NotFoundError) as info:
        state.models.get("good-modle")
    text = str(info.value)
    assert "did you mean: good-model" in text
    assert "broken" in text and "boom at import" in text


def test_strict_mode_reraises(fake_eps, monkeypatch):
    monkeypatch.setenv("MEDPROBE_STRICT_PLUGINS", "1")
    with pytest.raises(RuntimeError, match="boom at import"):
        plugin_mod.discover()


def test_allow_list_and_block_list(fake_eps, monkeypatch):
    monkeypatch.setenv("MEDPROBE_LOAD_PLUGINS", "good")
    state = plugin_mod.discover()
    assert [p.name for p in state.plugins] == ["good"] and not state.errors
    monkeypatch.delenv("MEDPROBE_LOAD_PLUGINS")
    monkeypatch.setenv("MEDPROBE_BLOCK_PLUGINS", "broken,mp-hookfail")  # by plugin name and by distribution
    state = plugin_mod.discover()
    assert sorted(p.name for p in state.plugins) == ["good"] and not state.errors
    monkeypatch.setenv("MEDPROBE_LOAD_PLUGINS", "")
    monkeypatch.delenv("MEDPROBE_BLOCK_PLUGINS")
    assert plugin_mod.discover().plugins == []


def test_duplicate_ids_name_both_distributions(fake_eps, tmp_path, monkeypatch):
    dup = fake_distribution(tmp_path / "d", "mp-dup", {"mp_dup_plugin": DUPLICATE}, {"dup": "mp_dup_plugin"})
    monkeypatch.setattr(plugin_mod, "entry_points", lambda: fake_eps[:1] + dup)
    state = plugin_mod.discover()
    with pytest.raises(DuplicateRegistrationError) as info:
        state.models.get("good-model")
    assert "mp-good" in str(info.value) and "mp-dup" in str(info.value)
    assert any(e.stage == "duplicate" for e in state.errors)
    monkeypatch.setenv("MEDPROBE_STRICT_PLUGINS", "1")
    with pytest.raises(DuplicateRegistrationError):
        plugin_mod.discover()


def test_cli_survives_broken_plugin(fake_eps):
    from medprobe.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    errors = {p["name"]: p["error"] for p in data["plugins"]}
    assert "boom at import" in errors["broken"]
    assert errors["good"] is None
    result = runner.invoke(cli, ["models", "list", "--json"])
    assert result.exit_code == 0
    assert [c["id"] for c in json.loads(result.output)] == ["good-model"]


def test_model_not_found_exit_code_and_message(fake_eps, capsys):
    from medprobe.cli import main

    with pytest.raises(SystemExit) as info:
        main(["models", "show", "nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "model 'nope' not found" in err and "broken" in err


def test_builtin_plugins_are_entry_points():
    """Every built-in family and the zoo come through the same entry-point group."""
    names = {ep.name: ep.value for ep in plugin_mod.entry_points()}
    for expected in ("zoo", "datasets", "analysis", "qwen_vl", "gemma3", "llava", "hulumed", "timm", "open_clip", "hf_clip"):
        assert expected in names, expected


def test_every_hook_is_documented_in_code_and_contributing():
    from pathlib import Path

    from medprobe import hookspecs

    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert set(plugin_mod.HOOKS) | {"register_commands"} == set(hooks)
    contributing = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert ("register(" in doc or "click.Group" in doc), f"{name} docstring lacks its signature"
        assert f"`{name}(" in contributing, f"{name} missing from CONTRIBUTING.md"
