"""What a run records about where its features come from, beyond the run key: the weights
condition (pretrained / random-weights twin / tiny random, LoRA) and the data's leakage groups.

:func:`condition_and_leakage` is called by :func:`medprobe.extract.plan_extract`; it fills the
manifest's ``condition`` and ``leakage`` blocks and ``dataset.groups`` (one group label per
row, aligned with ``dataset.sample_ids``), documented in ``docs/feature-store.md``. The condition is
derived from the weights label and the LoRA identity, both already part of the run key, so a
twin's run key always differs from its model's. The leakage record and the groups are derived from
the images (content and perceptual hashes), which the key covers through the dataset fingerprint
and spec only: they are recorded, not keyed.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def condition_and_leakage(
    loaded: Any, ds: Any, samples: Sequence[Any], adapter_lora: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(condition, leakage, sample_groups)`` of extracting ``loaded`` over ``samples`` of ``ds``."""
    from ..datasets.groups import dataset_leakage
    from ..models.condition import weights_condition

    condition = weights_condition(loaded.weights, adapter_lora, loaded.extra.get("random_init_redrawn"))
    leakage, groups = dataset_leakage(ds, samples)
    return condition, leakage, groups
