"""``medprobe finetune`` (LoRA SFT on the classification prompt) and ``extract --adapter``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medprobe.cli import main
from medprobe.datasets import open_dataset
from medprobe.models.lora import ADAPTER_WEIGHTS, LoraError, apply_lora
from medprobe.tasks.finetune import (
    LoraSettings, answer_ids, finetune, with_answers,
)
from medprobe.features.store import Run, sha256_file
from medprobe.models.prepare import load_model

DATASET = "synthetic:lesions?n=24&size=32"
MODEL = "llava-1.5-7b"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny LoRA fine-tune through the CLI, shared by the tests of this module."""
    out = tmp_path_factory.mktemp("lora") / "adapter"
    main(["finetune", "--model", MODEL, "--dataset", DATASET, "--out", str(out), "--tiny", "--lr", "2e-2",
          "--epochs", "4", "--batch-size", "4", "--max-steps", "8", "--device", "cpu", "--dropout", "0"])
    return out


def test_finetune_lowers_the_answer_loss_and_records_the_run(trained):
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    losses = [r["loss"] for r in log]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    record = json.loads((trained / "medprobe_finetune.json").read_text())
    ds = open_dataset(DATASET)
    train = [s for s in ds.samples if s.split == "train"]
    assert record["format"] == "medprobe.finetune/1"
    assert (record["model"]["id"], record["model"]["weights"]) == (MODEL, "tiny-random(seed=0)")
    assert record["dataset"]["spec"] == ds.spec and record["dataset"]["fingerprint"] == ds.fingerprint()
    assert record["dataset"]["split"] == "train" and record["dataset"]["samples"] == len(train) < len(ds.samples)
    first_epoch = [r for r in log if r["epoch"] == 0]
    assert sum(r["samples"] for r in first_epoch) == len(train)  # an epoch = the train split, nothing else
    hp = record["hyperparameters"]
    assert (hp["rank"], hp["alpha"], hp["targets"], hp["lr"], hp["max_steps"]) == (8, 16.0, ["q_proj", "v_proj"], 0.02, 8)
    assert (record["steps"], record["first_loss"], record["final_loss"]) == (8, losses[0], losses[-1])
    assert record["synthetic"] and "tiny random model (--tiny)" in record["synthetic_reasons"]
    assert record["answers"] == {"normal": "normal", "round_lesion": "round lesion", "spiculated_lesion": "spiculated lesion"}
    # only LLM attention projections were adapted
    saved = load_file(str(trained / ADAPTER_WEIGHTS))
    assert saved and all(".language_model.layers." in k and ("q_proj" in k or "v_proj" in k) for k in saved)


def test_adapter_reloads_with_its_trained_weights_on_the_same_layer_paths(trained):
    base = load_model(MODEL, tiny=True)
    paths = [s.path for s in base.layer_map]
    adapted = apply_lora(base, trained)
    assert [s.path for s in adapted.layer_map] == paths
    modules = dict(adapted.model.named_modules())
    assert all(p in modules for p in paths)
    identity = adapted.extra["adapter_lora"]
    assert identity["sha256"] == sha256_file(trained / ADAPTER_WEIGHTS) and identity["merged"] is False
    assert identity["trained_on"] == {"id": MODEL, "weights": "tiny-random(seed=0)"}
    state = adapted.model.state_dict()
    saved = load_file(str(trained / ADAPTER_WEIGHTS))
    for key, value in saved.items():
        loaded_key = key.removeprefix("base_model.model.").replace(".weight", ".default.weight")
        assert torch.equal(state[loaded_key], value), key
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # B moved off its zero init

    with pytest.raises(LoraError, match="already carries adapter"):
        apply_lora(adapted, trained)
    with pytest.raises(LoraError, match=r"trained for model 'llava-1.5-7b', not 'llava-med-v1.5'"):
        apply_lora(load_model("llava-med-v1.5", tiny=True), trained)


def test_extract_with_the_adapter_changes_llm_features_and_the_run_key(trained, tmp_path, capsys):
    common = ["extract", "--model", MODEL, "--dataset", DATASET, "--out", str(tmp_path), "--tiny", "--limit", "4",
              "--device", "cpu", "--layers", "vision.*,connector,llm.*", "--json"]
    runs = {}
    for name, extra in (("before", []), ("after", ["--adapter", str(trained)]),
                        ("merged", ["--adapter", str(trained), "--merge-adapter"])):
        main(common + extra)
        runs[name] = Run.open(json.loads(capsys.readouterr().out)["run"])
    before, after, merged = runs["before"], runs["after"], runs["merged"]
    assert len({before.key, after.key, merged.key}) == 3
    assert before.manifest["model"]["adapter_lora"] is None
    identity = after.manifest["model"]["adapter_lora"]
    assert identity["path"] == str(trained.resolve()) and identity["sha256"] == sha256_file(trained / ADAPTER_WEIGHTS)
    assert identity["config"]["r"] == 8 and identity["config"]["peft_type"] == "LORA"
    assert merged.manifest["model"]["adapter_lora"]["merged"] is True
    for layer in ("vision.00", "vision.03", "connector"):  # LoRA sits in the LLM only
        np.testing.assert_array_equal(before.features(layer, "image-mean"), after.features(layer, "image-mean"))
    for layer in ("llm.00", "llm.03"):
        assert not np.allclose(before.features(layer, "last-token"), after.features(layer, "last-token"), atol=1e-6)
        np.testing.assert_allclose(after.features(layer, "last-token"), merged.features(layer, "last-token"),
                                   rtol=1e-4, atol=1e-5)

    with pytest.raises(SystemExit):
        main(common + ["--merge-adapter"])
    assert "--merge-adapter needs --adapter" in capsys.readouterr().err


def test_with_answers_scores_only_answer_tokens_for_either_padding_side():
    pad = 0
    inputs = {
        "input_ids": torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]]),  # row 0 left-padded
        "attention_mask": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
        "token_type_ids": torch.tensor([[0, 0, 0, 1, 0], [0, 1, 1, 0, 0]]),
        "pixel_values": torch.ones(2, 3, 4, 4),
    }
    out, rows, positions = with_answers(inputs, [[20, 21, 2], [22, 2]], pad)
    assert out["input_ids"].tolist() == [[5, 6, 7, 20, 21, 2, 0], [5, 6, 7, 8, 9, 22, 2]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0], [1] * 7]
    assert out["token_type_ids"].tolist() == [[0, 1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]]
    assert out["pixel_values"] is inputs["pixel_values"]
    assert rows.tolist() == [0, 0, 0, 1, 1] and positions.tolist() == [3, 4, 5, 5, 6]
    assert out["input_ids"][rows, positions].tolist() == [20, 21, 2, 22, 2]


def test_answer_tokens_follow_the_prompt_and_end_with_eos():
    tokenizer = load_model(MODEL, tiny=True).processor.tokenizer
    prompt = tokenizer("USER: which image ? ASSISTANT:")["input_ids"]
    ids = answer_ids(tokenizer, prompt, "normal")
    assert ids == [tokenizer.convert_tokens_to_ids("normal"), tokenizer.eos_token_id]


def _stock_mllm_cards() -> list[str]:
    from medprobe.models.zoo import list_cards

    return [c.id for c in list_cards(kind="mllm") if c.family in ("llava", "qwen2_vl", "qwen2_5_vl", "gemma3")]


# every stock-class MLLM card of the zoo (Hulu-Med needs remote code and is refused elsewhere)
@pytest.mark.parametrize("card_id", _stock_mllm_cards())
def test_finetune_runs_on_every_stock_family(card_id, tmp_path):
    result = finetune(card_id, "synthetic:lesions?n=6&size=32", tmp_path / "a", tiny=True, device="cpu",
                      settings=LoraSettings(max_steps=1, batch_size=2, lr=1e-2))
    assert result.record["steps"] == 1 and np.isfinite(result.losses[0])
    assert result.record["hyperparameters"]["trainable_parameters"] > 0
    adapted = apply_lora(load_model(card_id, tiny=True), tmp_path / "a")
    assert adapted.extra["adapter_lora"]["trained_on"]["id"] == card_id


def test_bad_settings_and_existing_adapters_are_refused(trained, tmp_path, capsys):
    with pytest.raises(LoraError, match=r"--rank must be >= 1 \(got 0\)"):
        LoraSettings(rank=0).check()
    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--model", MODEL, "--dataset", DATASET, "--out", str(trained), "--tiny"])
    assert exc.value.code == 2 and "already holds an adapter" in capsys.readouterr().err
    with pytest.raises(LoraError, match="match no module"):
        finetune(MODEL, DATASET, tmp_path / "x", tiny=True, device="cpu", settings=LoraSettings(targets=("nope_proj",)))
