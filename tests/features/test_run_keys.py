"""Run keys are the feature store's identity: a run extracted by an earlier medprobe is reused only if
today's code computes the same key. These golden keys were computed by the code before the issue-14
restructure (commit c044ae6) for tiny models on the embedded synthetic dataset; a change here means
every stored run would be recomputed, so it must be deliberate (bump FEATURE_VERSION and say so)."""

from __future__ import annotations

import pytest

from medprobe.datasets import open_dataset
from medprobe.features.plan import plan_extract
from medprobe.models.prepare import prepare_model

GOLDEN = {
    "resnet50": "b7b0366363d22579191b875370eb6762e99e372608000804cea467acb6487fae",
    "lingshu-7b": "40c23aba4450d7a0c20463f9340d005341325743aacda00b0282fec43d5f1206",
    "llava-med-v1.5": "27464b8f8d129d0d0d1ecbf5abf991dc64e1ef88ecb21218a468cef0e0b49dec",
}


@pytest.mark.parametrize("ref", sorted(GOLDEN))
def test_run_key_of_a_tiny_model_is_unchanged(ref, tmp_path):
    ds = open_dataset("synthetic:lesions")
    loaded, device, dtype = prepare_model(ref, tiny=True, device="cpu", dtype="fp32")
    plan = plan_extract(loaded, ds, tmp_path, batch_size=8, device=device, dtype=dtype, seed=0, load_options={})
    assert plan.key == GOLDEN[ref]
    assert plan.run_dir.parent == tmp_path and plan.run_dir.name.endswith(GOLDEN[ref][:12])
