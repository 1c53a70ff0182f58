"""The family plugins register through entry points, lazily, without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medprobe.adapter import ModelAdapter
from medprobe.plugins import discover
from medprobe.registry import resolve_factory

FAMILIES = {
    "qwen2_vl": ("qwen_vl", "medprobe_qwen_vl.adapter:Qwen2VLAdapter"),
    "qwen2_5_vl": ("qwen_vl", "medprobe_qwen_vl.adapter:Qwen25VLAdapter"),
    "gemma3": ("gemma3", "medprobe_gemma3.adapter:Gemma3Adapter"),
    "llava": ("llava", "medprobe_llava.adapter:LlavaAdapter"),
    "hulumed": ("hulumed", "medprobe_hulumed.adapter:HuluMedAdapter"),
}


def test_entry_points_register_the_five_families(monkeypatch):
    monkeypatch.setenv("MEDPROBE_LOAD_PLUGINS", "qwen_vl,gemma3,llava,hulumed")
    monkeypatch.setenv("MEDPROBE_STRICT_PLUGINS", "1")
    state = discover()
    assert state.errors == []
    assert sorted(state.adapters.names()) == sorted(FAMILIES)
    for family, (plugin, factory) in FAMILIES.items():
        entry = state.adapters.entry(family)
        assert entry.value == factory and entry.origin.plugin == plugin and entry.description
        cls = resolve_factory(entry.value)
        assert issubclass(cls, ModelAdapter) and cls.family == family
    assert resolve_factory(FAMILIES["hulumed"][1]).needs_remote_code


@pytest.mark.parametrize(
    "module",
    ["medprobe_qwen_vl.plugin", "medprobe_gemma3.plugin", "medprobe_llava.plugin", "medprobe_hulumed.plugin",
     "medprobe.models.hf", "medprobe_hulumed.listing"],
)
def test_plugin_modules_import_no_torch(module):
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'timm', 'open_clip') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
