"""The demo's models come from the zoo (cards marked ``demo = N``), not from a list in the core."""

from __future__ import annotations

from medprobe.models.zoo import get_card, list_cards
from medprobe.tasks.pipeline import demo_models


def test_the_zoo_marks_three_mllm_families_and_two_baselines_in_order():
    ids = demo_models()
    assert ids == ["lingshu-7b", "medgemma-4b", "llava-med-v1.5", "resnet50", "vit-small-patch16-224"]
    cards = [get_card(i) for i in ids]
    assert [c.kind for c in cards] == ["mllm"] * 3 + ["baseline"] * 2
    assert len({c.family for c in cards if c.kind == "mllm"}) == 3
    assert [c.demo for c in cards] == sorted(c.demo for c in cards)
    assert all(c.demo is None for c in list_cards() if c.id not in ids)


def test_the_demo_mark_does_not_enter_run_keys():
    assert "demo" not in get_card("resnet50").identity()
