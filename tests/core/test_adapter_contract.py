"""Optional adapter capabilities are declared on the contract, and the declarations are true."""

from __future__ import annotations

import dataclasses

import pytest

from medprobe.adapter import ModelAdapter
from medprobe.models.zoo import get_adapter, get_card
from medprobe.plugins import get_plugins
from medprobe.testing import check_model

#: capability flag -> the method a declaring adapter must implement
METHODS = {"encodes_images": "encode_images", "has_text_tower": "encode_texts", "names_ad_hoc_models": "card_for_name"}


def _families() -> list[str]:
    return sorted(e.name for e in get_plugins().adapters)


@pytest.mark.parametrize("family", _families())
def test_declared_capabilities_are_implemented_and_undeclared_ones_are_not(family):
    adapter = get_adapter(family)
    for flag, method in METHODS.items():
        overridden = getattr(type(adapter), method) is not getattr(ModelAdapter, method)
        assert getattr(adapter, flag) == overridden, f"{family}: {flag}={getattr(adapter, flag)} but {method} overridden={overridden}"
    if adapter.scores_answers:  # score mode runs the transformers LM head of a stock MLLM
        from medprobe.models.hf.stock import StockMLLMAdapter

        assert isinstance(adapter, StockMLLMAdapter)
    assert adapter.loaders and all(isinstance(x, str) and x for x in adapter.loaders)
    assert set(adapter.describe()) >= {"scores_answers", "encodes_images", "has_text_tower", "names_ad_hoc_models"}


def test_the_four_stock_mllm_families_score_answers_and_the_others_do_not():
    scoring = sorted(f for f in _families() if get_adapter(f).scores_answers)
    assert scoring == ["gemma3", "llava", "qwen2_5_vl", "qwen2_vl"]


def test_a_card_whose_loader_its_family_does_not_declare_fails_conformance(monkeypatch):
    card = dataclasses.replace(get_card("resnet18"), loader="convert")
    monkeypatch.setattr("medprobe.models.zoo.get_card", lambda ref: card)
    report = check_model("resnet18", capture=False)
    assert any("loader 'convert' is not one of family 'timm' adapter's loaders ['timm']" in p for p in report.problems)


def test_the_base_methods_of_undeclared_capabilities_say_so():
    adapter = get_adapter("example_cnn")
    with pytest.raises(NotImplementedError, match="does not encode images"):
        adapter.encode_images(None, None)
    with pytest.raises(NotImplementedError, match="takes no free model names"):
        adapter.card_for_name("x")
