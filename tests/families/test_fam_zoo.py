"""The zoo's cards of these families work with their adapters (tiny models / recorded listings)."""

from __future__ import annotations

import pytest

from medprobe.models.zoo import get_adapter, list_cards, resolve_layers

from ._tiny import QUESTION, images

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "gemma3", "llava", "hulumed")


def _cards():
    cards = [c for c in list_cards(kind="mllm") if c.family in FAMILIES]
    if not cards:
        pytest.skip("no zoo cards of these families are registered")
    return cards


def test_every_zoo_card_resolves_its_layer_map():
    for card in _cards():
        _, lm = resolve_layers(card.id)
        assert [s.stage for s in lm][0] == "vision" and lm["connector"] and lm.stage("llm"), card.id
        assert sum(s.feeds_connector for s in lm.stage("vision")) == 1, card.id
        if card.family == "hulumed":
            assert lm.resolved_against.startswith("recorded listing"), card.id
        else:
            assert lm.resolved_against.startswith("tiny random"), card.id


def test_zoo_card_prompts_place_the_image_on_tiny_models():
    """Each stock card's prompt_template renders with the family's placeholder and runs."""
    for card in _cards():
        if card.family == "hulumed":
            continue
        adapter = get_adapter(card.family)
        loaded = adapter.build_tiny(card)
        batch = adapter.preprocess(loaded, images(2), QUESTION)
        counts = batch.roles["image"].sum(dim=1).tolist()
        assert counts[0] > 0 and counts[0] == counts[1], card.id
        assert batch.roles["last"].sum(dim=1).tolist() == [1, 1], card.id
        adapter.forward(loaded, batch)


def test_zoo_cards_pass_the_conformance_kit():
    """medprobe.testing.check_model: tiny build (or listing), layer map, capture of every layer."""
    from medprobe.testing import check_model

    for card in _cards():
        report = check_model(card.id)
        assert report.ok, (card.id, report.problems)
