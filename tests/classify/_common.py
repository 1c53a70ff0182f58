"""Shared material for the classify tests: one tiny model per family, built once, and a small dataset."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from medprobe.adapter import LoadedModel
from medprobe.models.prepare import load_model

#: one card per stock family (LLaVA with a Mistral text model and with a BOS-less Qwen2 one)
FAMILY_CARDS = ("medvlm-r1-2b", "lingshu-7b", "medgemma-4b", "llava-med-v1.5", "huatuogpt-vision-7b-original")
DATA = "synthetic:lesions?n=20&size=32"


@lru_cache(maxsize=None)
def tiny_model(ref: str) -> LoadedModel:
    """Built once per card; classify() does not change the weights."""
    return load_model(ref, tiny=True, seed=0)


def read_answers(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "answers.jsonl").read_text().splitlines()]


def accuracy_from_answers(rows: list[dict], split: str) -> tuple[int, float | None]:
    part = [r for r in rows if split == "all" or r["split"] == split]
    return len(part), (sum(r["correct"] for r in part) / len(part) if part else None)
