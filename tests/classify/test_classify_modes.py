"""classify(): generate and score modes on tiny models of every stock family, the run record,
one prompt forward per image in score mode, run reuse, refusals, and the prompt shared with extract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medprobe.tasks.answers import parse_answer
from medprobe.tasks.classify import (
    FORMAT,
    ClassifyError,
    ClassifyRun,
    answer_strings,
    answer_tokens,
    classify,
    generate_batch,
    generation_config,
    score_batch,
)
from medprobe.cli import cli
from medprobe.datasets import open_dataset
from medprobe.features.extract import extract
from medprobe.models.hf.prompting import render_prompt
from medprobe.prompts import classification_question
from medprobe.testing import synthetic_images
from medprobe.models.zoo import get_adapter, list_cards
from medprobe.models.prepare import load_model

from ._common import DATA, FAMILY_CARDS, accuracy_from_answers, read_answers, tiny_model

CLASSES = ["normal", "round_lesion", "spiculated_lesion"]


def _check_record_against_answers(run: ClassifyRun, n_samples: int) -> list[dict]:
    rows = read_answers(run.path)
    rec = run.record
    assert rec["format"] == FORMAT and rec["status"] == "complete"
    assert len(rows) == n_samples == len(rec["dataset"]["sample_ids"])
    assert [r["id"] for r in rows] == rec["dataset"]["sample_ids"]
    for split in ("train", "val", "test", "all"):
        n, acc = accuracy_from_answers(rows, split)
        assert rec["accuracy"][split]["n"] == n
        assert rec["accuracy"][split]["accuracy"] == pytest.approx(acc) if acc is not None else rec["accuracy"][split]["accuracy"] is None
        assert rec["unparsed"][split] == sum(1 for r in rows if r["parsed"] is None and (split == "all" or r["split"] == split))
    assert run.p_final == rec["accuracy"]["test"]["accuracy"]
    assert run.p_final_n == sum(1 for r in rows if r["split"] == "test") > 0
    for r in rows:  # unparsed answers are wrong, never dropped
        assert r["correct"] == (r["parsed"] is not None and r["parsed"] == r["label"])
    confusion = np.array(rec["confusion"]["all"])
    assert confusion.shape == (3, 4) and confusion.sum() == n_samples
    assert np.array(rec["confusion"]["test"]).sum() == run.p_final_n
    assert confusion[:, 3].sum() == rec["unparsed"]["all"]
    assert np.trace(confusion[:, :3]) == sum(r["correct"] for r in rows)
    assert rec["synthetic"] and rec["banner"].startswith("SYNTHETIC")
    assert "tiny random model (--tiny)" in rec["synthetic_reasons"]
    return rows


@pytest.mark.parametrize("ref", FAMILY_CARDS)
def test_score_mode_on_each_family(ref, tmp_path):
    run = classify(tiny_model(ref), DATA, tmp_path, mode="score", tiny=True, batch_size=5, progress=False)
    rows = _check_record_against_answers(run, 20)
    for r in rows:
        assert r["method"] == "score" and list(r["scores"]) == CLASSES
        scores = list(r["scores"].values())
        assert all(np.isfinite(scores)) and all(s < 0 for s in scores)
        assert r["parsed"] == int(np.argmax(scores))
    assert run.record["answers"]["score_normalization"] == "sum"
    assert run.record["unparsed"]["all"] == 0


@pytest.mark.parametrize("ref", FAMILY_CARDS)
def test_generate_mode_on_each_family(ref, tmp_path):
    run = classify(tiny_model(ref), DATA, tmp_path, mode="generate", tiny=True, batch_size=6, max_new_tokens=3,
                   progress=False)
    rows = _check_record_against_answers(run, 20)
    for r in rows:
        assert isinstance(r["answer"], str) and "scores" not in r
        assert (r["parsed"], r["method"]) == tuple(parse_answer(r["answer"], CLASSES, "synthetic-lesions"))
    methods = run.record["accuracy"]["all"]["methods"]
    assert sum(methods.values()) == 20
    assert methods.get("unparsed", 0) + methods.get("ambiguous", 0) == run.record["unparsed"]["all"]


@pytest.mark.parametrize("ref", FAMILY_CARDS)
def test_score_equals_the_full_sequence_likelihood(ref):
    """The cached-prefix scores equal log p(answer | prompt) from plain full-sequence forwards."""
    loaded = tiny_model(ref)
    adapter = get_adapter(loaded.card.family)
    question = classification_question(CLASSES)
    images = synthetic_images(2, size=48)
    batch = adapter.preprocess(loaded, images, question)
    text = render_prompt(loaded.card, loaded.processor, question, adapter.image_placeholder(loaded.processor))
    tokens = answer_tokens(loaded.processor.tokenizer, text, answer_strings(CLASSES))
    got = score_batch(loaded, batch, tokens)
    got_mean = score_batch(loaded, batch, tokens, normalization="mean")
    assert got.shape == (2, 3)
    with torch.inference_mode():
        for b, image in enumerate(images):
            one = adapter.preprocess(loaded, [image], question)
            t = one.inputs["input_ids"].shape[1]
            for k, ids in enumerate(tokens):
                inputs = dict(one.inputs)
                extra = torch.tensor([ids])
                inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
                inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
                for name in ("mm_token_type_ids", "token_type_ids"):
                    if name in inputs:  # answer tokens are text
                        inputs[name] = torch.cat([inputs[name], torch.zeros_like(extra)], 1)
                logp = loaded.model(**inputs, use_cache=False).logits[0].float().log_softmax(-1)
                expect = sum(float(logp[t - 1 + j, tok]) for j, tok in enumerate(ids))
                assert float(got[b, k]) == pytest.approx(expect, abs=1e-4), (ref, b, k)
                assert float(got_mean[b, k]) == pytest.approx(expect / len(ids), abs=1e-4)


@pytest.mark.parametrize("ref", ["lingshu-7b", "llava-med-v1.5"])
def test_greedy_generation_decodes_only_the_new_tokens(ref):
    loaded = tiny_model(ref)
    adapter = get_adapter(loaded.card.family)
    tok = loaded.processor.tokenizer
    batch = adapter.preprocess(loaded, synthetic_images(2, size=48), classification_question(CLASSES))
    texts = generate_batch(loaded, batch, generation_config(loaded.model, 1, tok), tok)
    with torch.inference_mode():
        best = loaded.model(**batch.inputs, use_cache=False).logits[:, -1].argmax(-1)
    assert texts == [tok.decode([int(i)], skip_special_tokens=True) for i in best]


def test_generation_config_is_greedy_whatever_the_checkpoint_says():
    from types import SimpleNamespace

    from transformers import GenerationConfig

    sampling = SimpleNamespace(generation_config=GenerationConfig(do_sample=True, temperature=0.2, top_p=0.8, top_k=5,
                                                                   num_beams=3, eos_token_id=2))
    config = generation_config(sampling, 7, SimpleNamespace(pad_token_id=0))
    assert (config.do_sample, config.num_beams, config.max_new_tokens, config.pad_token_id) == (False, 1, 7, 0)
    config.validate(strict=True)  # no sampling flag left that greedy decoding would ignore
    assert sampling.generation_config.do_sample  # the checkpoint's config is left alone


@pytest.mark.parametrize("ref", ["lingshu-7b", "medgemma-4b"])
def test_score_mode_runs_the_prompt_once_per_image(ref, tmp_path):
    """Language-model calls per batch of b images: one prompt pass (b, T) and one continuation
    pass (b*K, L-1) over the cache; the connector (image features) runs once per batch."""
    loaded = tiny_model(ref)
    lm = loaded.model.model.language_model
    connector = dict(loaded.model.named_modules())[loaded.layer_map.stage("connector")[0].path]
    calls, images_encoded = [], []

    def on_lm(module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        calls.append(tuple(x.shape[:2]))

    handles = [lm.register_forward_pre_hook(on_lm, with_kwargs=True),
               connector.register_forward_hook(lambda m, a, o: images_encoded.append(1))]
    try:
        classify(loaded, DATA, tmp_path, mode="score", tiny=True, batch_size=8, progress=False)
    finally:
        for h in handles:
            h.remove()
    # 20 samples in batches of 8, 8, 4; K = 3 classes; longest answer 2 tokens -> continuation length 1
    prompt_len = calls[0][1]
    assert prompt_len > 10
    assert calls == [(8, prompt_len), (24, 1), (8, prompt_len), (24, 1), (4, prompt_len), (12, 1)]
    assert sum(rows for rows, length in calls if length == prompt_len) == 20  # each image's prompt ran once
    assert len(images_encoded) == 3


def test_runs_are_reused_and_keyed(tmp_path):
    loaded = tiny_model("lingshu-7b")
    first = classify(loaded, DATA, tmp_path, mode="score", tiny=True, progress=False)
    stamp = (first.path / "classify.json").stat().st_mtime_ns
    again = classify(loaded, DATA, tmp_path, mode="score", tiny=True, progress=False)
    assert again.path == first.path and again.key == first.key
    assert (first.path / "classify.json").stat().st_mtime_ns == stamp  # reused, not recomputed
    assert first.path.name.startswith("lingshu-7b__synthetic-lesions__") and first.path.name.endswith(first.key[:12])
    other = classify(loaded, DATA, tmp_path, mode="score", tiny=True, progress=False, score_normalization="mean",
                     prompt_template="Which finding is shown? Choose from: {options}.")
    assert other.path != first.path
    assert other.record["question"] == "Which finding is shown? Choose from: normal, round lesion, spiculated lesion."
    assert ClassifyRun.open(other.path).record == other.record


def test_refusals(tmp_path):
    with pytest.raises(ClassifyError, match="resnet50.*baseline"):
        classify("resnet50", DATA, tmp_path, tiny=True)
    with pytest.raises(ClassifyError, match="score mode needs a transformers stock family"):
        classify("hulu-med-4b", DATA, tmp_path, mode="score", tiny=True)
    with pytest.raises(ClassifyError, match="unknown mode"):
        classify("lingshu-7b", DATA, tmp_path, mode="vote", tiny=True)
    with pytest.raises(ClassifyError, match=r"\{options\}"):
        classify("lingshu-7b", DATA, tmp_path, tiny=True, prompt_template="Is it benign?")


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_prompt_and_in_pass_features_match_extract(mode, tmp_path):
    """classify asks exactly extract's prompt; its in-pass last-token features are the extract
    run of layers llm.* / readout last-token (same run key, same values)."""
    loaded = tiny_model("lingshu-7b")
    run = classify(loaded, DATA, tmp_path / "c", mode=mode, tiny=True, batch_size=6, max_new_tokens=2,
                   capture_last_token=True, progress=False)
    ref = extract(loaded, DATA, tmp_path / "e", layers="llm.*", readouts="last-token", batch_size=6, progress=False)
    assert run.record["question"] == ref.manifest["prompt"] == classification_question(open_dataset(DATA).classes)
    sub = run.features_run()
    assert sub is not None and sub.complete and sub.key == ref.key
    assert run.record["capture"]["run_key"] == ref.key
    assert sub.feature_keys == ref.feature_keys == [(f"llm.{i:02d}", "last-token") for i in range(4)]
    np.testing.assert_array_equal(sub.labels, ref.labels)
    for layer, readout in ref.feature_keys:
        np.testing.assert_allclose(sub.features(layer, readout), ref.features(layer, readout), atol=1e-5, rtol=1e-5)
    assert sub.verify() == []


def test_cli_classify(tmp_path):
    args = ["classify", "-m", "medgemma-4b", "-d", DATA, "--out", str(tmp_path), "--tiny", "--mode", "generate",
            "--max-new-tokens", "2", "--batch-size", "6"]
    out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["mode"] == "generate" and summary["p_final_n"] > 0
    assert sum(summary["methods"].values()) == 20
    assert summary["unparsed"]["all"] == summary["methods"].get("unparsed", 0) + summary["methods"].get("ambiguous", 0)
    text = CliRunner().invoke(cli, args)  # reuses the run
    assert text.exit_code == 0, text.output
    assert summary["run"] in text.output and "P_final (test accuracy, generate)" in text.output
    assert "NOTE: SYNTHETIC" in text.output
    refused = CliRunner().invoke(cli, ["classify", "-m", "resnet50", "-d", DATA, "--tiny"])
    assert refused.exit_code != 0 and "baseline" in str(refused.exception or refused.output)


STOCK_CARDS = sorted(c.id for c in list_cards(kind="mllm") if c.loader in ("stock", "convert"))


@pytest.mark.slow
@pytest.mark.parametrize("ref", STOCK_CARDS)
def test_every_stock_card_classifies_tiny_in_both_modes(ref, tmp_path):
    assert len(STOCK_CARDS) >= 15
    loaded = load_model(ref, tiny=True)
    for mode in ("score", "generate"):
        run = classify(loaded, DATA, tmp_path, mode=mode, tiny=True, limit=4, batch_size=4, max_new_tokens=1,
                       progress=False)
        rows = read_answers(run.path)
        assert len(rows) == 4 and run.record["mode"] == mode and run.record["model"]["card"]["id"] == ref
        assert all(("scores" in r) == (mode == "score") for r in rows)
