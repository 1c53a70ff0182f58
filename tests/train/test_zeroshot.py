"""Zero-shot CLIP classification on tiny open_clip / HF CLIP / SigLIP towers: encoders, scoring,
``zeroshot.json``, and P_final of the baseline row in the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medprobe.cli import cli
from medprobe.datasets import open_dataset
from medprobe.features.extract import extract
from medprobe.tasks.pipeline import probe_run, report_runs
from medprobe.registry import MedprobeError
from medprobe.tasks.zeroshot import (
    DEFAULT_TEMPLATES,
    ZEROSHOT_FORMAT,
    ZeroShotError,
    class_embeddings,
    class_prompts,
    zeroshot,
    zeroshot_scores,
)
from medprobe.models.zoo import get_adapter
from medprobe.models.prepare import load_model

from .conftest import DATA


@pytest.fixture(scope="module")
def dataset():
    return open_dataset(DATA)


@pytest.mark.parametrize("ref", ["clip-vit-l-14-336", "pubmedclip", "medsiglip-448"])
def test_tiny_towers_encode_images_and_texts(ref, dataset):
    loaded = load_model(ref, tiny=True)
    adapter = get_adapter(loaded.card.family)
    images = [dataset.load_image(s) for s in dataset.samples[:3]]
    with torch.no_grad():
        img = adapter.encode_images(loaded, adapter.preprocess(loaded, images))
        txt = adapter.encode_texts(loaded, ["a medical image of round lesion.", "normal.", "a medical image of round lesion."])
        alone = adapter.encode_texts(loaded, ["normal."])
    assert img.shape[0] == 3 and txt.shape[0] == 3 and img.shape[1] == txt.shape[1]
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()
    assert torch.allclose(txt[0], txt[2], atol=1e-5)  # same text, same embedding
    assert torch.allclose(txt[1], alone[0], atol=1e-5)  # independent of the rest of the batch
    assert not torch.allclose(txt[0], txt[1], atol=1e-3)


def test_the_class_whose_embedding_equals_an_image_embedding_is_predicted(dataset):
    loaded = load_model("pubmedclip", tiny=True)
    adapter = get_adapter("hf_clip")
    prompts = class_prompts(dataset.classes)
    text = class_embeddings(adapter, loaded, prompts)
    images = [dataset.load_image(s) for s in dataset.samples[:6]]
    with torch.no_grad():
        img = adapter.encode_images(loaded, adapter.preprocess(loaded, images)).double().numpy()
    for row, k in ((0, 2), (3, 0), (5, 1)):
        classes = text.copy()
        classes[k] = 7.0 * img[row]  # same direction, other scale: cosine 1
        cosine, proba = zeroshot_scores(img, classes)
        assert cosine[row, k] == pytest.approx(1.0)
        assert cosine[row].argmax() == k and proba[row].argmax() == k
        assert np.allclose(proba.sum(axis=1), 1.0)


def test_prompts_read_class_names_as_words():
    prompts = class_prompts(["round_lesion", "non-tumour"], ["a medical image of {c}.", "{c}"])
    assert prompts == {"round_lesion": ["a medical image of round lesion.", "round lesion"],
                       "non-tumour": ["a medical image of non tumour.", "non tumour"]}
    with pytest.raises(ZeroShotError, match="{c}"):
        class_prompts(["a"], ["no placeholder"])


@pytest.mark.parametrize("ref", ["clip-vit-l-14-336", "pubmedclip"])
def test_zeroshot_run_record(ref, dataset, tmp_path):
    run = zeroshot(ref, DATA, tmp_path / "zs", tiny=True, progress=False)
    rec = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert rec["format"] == ZEROSHOT_FORMAT and rec["model"]["card"]["id"] == ref
    assert rec["templates"] == list(DEFAULT_TEMPLATES)
    assert rec["prompts"]["spiculated_lesion"][0] == "a medical image of spiculated lesion."
    assert rec["dataset"]["fingerprint"] == dataset.fingerprint()
    assert rec["synthetic"] and any("tiny random" in r for r in rec["synthetic_reasons"])
    for split in ("train", "val", "test"):
        m = rec["metrics"][split]
        conf = np.array(m["confusion"])
        assert conf.sum() == m["n"] == len(dataset.by_split(split))
        assert np.trace(conf) / m["n"] == pytest.approx(m["accuracy"])
        assert {"balanced_accuracy", "macro_f1", "auroc", "ci95"} <= set(m)
    assert run.p_final == rec["metrics"]["test"]["accuracy"] and run.p_final_n == rec["metrics"]["test"]["n"]


def test_zeroshot_needs_a_text_tower(tmp_path):
    with pytest.raises(ZeroShotError, match="encode_texts"):
        zeroshot("resnet18", DATA, tmp_path / "zs", tiny=True, progress=False)


def test_report_shows_zero_shot_accuracy_as_p_final(tmp_path):
    runs = tmp_path / "runs"
    extracted = extract("pubmedclip", DATA, runs, tiny=True, progress=False)
    probe_run(extracted, "linear", controls=False)  # the report reuses these results (controls are slow)
    res = CliRunner().invoke(cli, ["zeroshot", "-m", "pubmedclip", "-d", DATA, "--out", str(tmp_path / "zs"), "--tiny"])
    assert res.exit_code == 0, res.output
    assert "P_final" in res.output
    zs = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["report", str(extracted.path), str(tmp_path / "zs"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads((out / "report.json").read_text())["models"][0]
    assert row["id"] == "pubmedclip" and row["kind"] == "baseline"
    assert row["p_final"] == zs["p_final"] and row["p_final_n"] == zs["p_final_n"]
    assert row["p_final_source"] == "zeroshot" and row["manifest"]["zeroshot"]["path"] == str(tmp_path / "zs")
    assert "(zero-shot)" in (out / "report.md").read_text()
    # a zero-shot run without the extract run of its model cannot be placed
    other = extract("clip-vit-l-14-336", DATA, runs, tiny=True, layers="head", progress=False)
    probe_run(other, "linear", controls=False)
    with pytest.raises(MedprobeError, match="pairs with no extract run"):
        report_runs([other.path, tmp_path / "zs"])
