"""Run keys are the feature store's identity: a run extracted by an earlier medprobe is reused only if
today's code computes the same key. A change of these golden keys means every stored run is
recomputed, so it must be deliberate (and said in the commit).

History: the issue-14 restructure left every key unchanged (checked against the code before the move,
commit c044ae6). Keys then changed once, on purpose, when the model part of the key became
``ModelCard.identity()`` (the fields that decide what a model computes) instead of the whole card, so
that correcting a citation, a note or an UNVERIFIED mark no longer invalidates stored runs; the test
below pins that, too."""

from __future__ import annotations

import pytest

from medprobe.datasets import open_dataset
from medprobe.features.plan import plan_extract
from medprobe.models.prepare import prepare_model

GOLDEN = {
    "resnet50": "b88bb6941e3008c0fe891c34c0fbdba490939e4f38d7b98cac7b1155a7e39fc5",
    "lingshu-7b": "e3bc20c2d254dee529203f5140a4092c276c3c96c0a34ba95dfbc95d20b69266",
    "llava-med-v1.5": "e159cc7eedcef4328a25cb6e3ba6162391f11d0656726b23027eff03d5eaacf5",
}


@pytest.mark.parametrize("ref", sorted(GOLDEN))
def test_run_key_of_a_tiny_model_is_unchanged(ref, tmp_path):
    ds = open_dataset("synthetic:lesions")
    loaded, device, dtype = prepare_model(ref, tiny=True, device="cpu", dtype="fp32")
    plan = plan_extract(loaded, ds, tmp_path, batch_size=8, device=device, dtype=dtype, seed=0, load_options={})
    assert plan.key == GOLDEN[ref]
    assert plan.run_dir.parent == tmp_path and plan.run_dir.name.endswith(GOLDEN[ref][:12])


def test_documentation_fields_of_a_card_do_not_enter_the_run_key(tmp_path):
    import dataclasses

    ds = open_dataset("synthetic:lesions")
    loaded, device, dtype = prepare_model("resnet50", tiny=True, device="cpu", dtype="fp32")
    before = plan_extract(loaded, ds, tmp_path, device=device, dtype=dtype, load_options={}).key
    loaded.card = dataclasses.replace(loaded.card, notes="corrected", sources={"params": "https://example.org/a"},
                                      unverified=(), title="another title")
    assert plan_extract(loaded, ds, tmp_path, device=device, dtype=dtype, load_options={}).key == before
    loaded.card = dataclasses.replace(loaded.card, settings={**loaded.card.settings, "image_size": 999})
    assert plan_extract(loaded, ds, tmp_path, device=device, dtype=dtype, load_options={}).key != before
