"""Seeded tiny models, the real ``from_pretrained`` path on fake checkpoints, and load refusals."""

from __future__ import annotations

import json

import pytest
import torch

from medprobe.adapter import AdapterError
from medprobe.cards import ModelCard

from ._tiny import CARDS, CASES, QUESTION, adapter_for, images, tiny


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_weights_other_seed_differs(case):
    adapter, card = adapter_for(case), CARDS[case]
    before = torch.random.get_rng_state()
    a = tiny(case, seed=0).model.state_dict()
    b = adapter.build_tiny(card, seed=0).model.state_dict()
    c = adapter.build_tiny(card, seed=1).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), before), "build_tiny must not move the global RNG"
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    differing = [k for k in a if not torch.equal(a[k], c[k])]
    assert len(differing) > len(a) // 3, "a different seed must re-draw the random weights"


@pytest.mark.parametrize("case", CASES)
def test_saved_checkpoint_loads_through_from_pretrained(case, tmp_path, offline):
    adapter, card = adapter_for(case), CARDS[case]
    built = tiny(case)
    adapter.save_tiny_checkpoint(card, tmp_path, seed=0)
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {p.name for p in tmp_path.iterdir()}

    loaded = adapter.load(card, source=str(tmp_path))
    assert type(loaded.model) is type(built.model)
    assert loaded.weights == f"local:{tmp_path.resolve()}" and not loaded.is_random
    assert (loaded.device, loaded.dtype) == ("cpu", "float32") and not loaded.model.training
    assert loaded.layer_map.ids == built.layer_map.ids
    assert [s.path for s in loaded.layer_map] == [s.path for s in built.layer_map]
    assert loaded.layer_map.resolved_against.endswith(f"loaded from local:{tmp_path.resolve()}")
    sd_built, sd_loaded = built.model.state_dict(), loaded.model.state_dict()
    assert sd_built.keys() == sd_loaded.keys()
    assert all(torch.equal(sd_built[k], sd_loaded[k]) for k in sd_built)

    pics = images(2)
    batch = adapter.preprocess(built, pics, QUESTION)
    reloaded_batch = adapter.preprocess(loaded, pics, QUESTION)  # the saved processor reproduces the inputs
    assert torch.equal(batch.inputs["input_ids"], reloaded_batch.inputs["input_ids"])
    torch.testing.assert_close(batch.inputs["pixel_values"], reloaded_batch.inputs["pixel_values"], rtol=0, atol=1e-6)
    with torch.no_grad():
        out_built = built.model.model(**batch.inputs, use_cache=False).last_hidden_state
        out_loaded = loaded.model.model(**batch.inputs, use_cache=False).last_hidden_state
    assert torch.equal(out_built, out_loaded)


def test_bf16_load_casts_pixels_and_runs(tmp_path, offline):
    adapter, card = adapter_for("qwen2_5_vl"), CARDS["qwen2_5_vl"]
    adapter.save_tiny_checkpoint(card, tmp_path)
    loaded = adapter.load(card, source=str(tmp_path), dtype="bf16")
    assert loaded.dtype == "bfloat16" and next(loaded.model.parameters()).dtype == torch.bfloat16
    batch = adapter.preprocess(loaded, images(2), QUESTION)
    assert batch.inputs["pixel_values"].dtype == torch.bfloat16
    assert batch.inputs["input_ids"].dtype == torch.long
    adapter.forward(loaded, batch)


def test_qwen_load_forces_the_card_resolution(tmp_path, offline):
    adapter = adapter_for("qwen2_vl")
    adapter.save_tiny_checkpoint(CARDS["qwen2_vl"], tmp_path)  # saved processor: 56 px
    # like the real Qwen preprocessor configs, carry min/max pixels (which override `size` when loaded)
    config_path = tmp_path / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"].update(min_pixels=3136, max_pixels=12845056)
    config_path.write_text(json.dumps(config))
    card = ModelCard(id="q112", kind="mllm", family="qwen2_vl", architecture="Qwen2VLForConditionalGeneration",
                     settings={"image_size": 112})
    loaded = adapter.load(card, source=str(tmp_path))
    assert loaded.extra["image_size"] == 112 and loaded.extra["image_tokens"] == 16
    batch = adapter.preprocess(loaded, images(2), QUESTION)
    assert batch.inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]
    assert batch.packed == {"vision": [64, 64], "connector": [16, 16]}
    bad = ModelCard(id="q100", kind="mllm", family="qwen2_vl", architecture="Qwen2VLForConditionalGeneration",
                    settings={"image_size": 100})
    with pytest.raises(AdapterError, match="not a multiple of"):
        adapter.load(bad, source=str(tmp_path))


def test_llava_convert_card_refuses_original_layout(tmp_path, offline):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llava_mistral", "architectures": ["LlavaMistralForCausalLM"], "mm_vision_select_layer": -2}
    ))
    card = ModelCard(id="llava-med-v1.5", kind="mllm", family="llava", architecture="LlavaMistralForCausalLM",
                     loader="convert", hub_id="microsoft/llava-med-v1.5-mistral-7b",
                     settings={"original_model_type": "llava_mistral", "text_model_type": "mistral"})
    with pytest.raises(AdapterError) as err:
        adapter_for("llava-mistral").load(card, source=str(tmp_path))
    msg = str(err.value)
    assert "medprobe convert llava-original" in msg and "llava_mistral" in msg
    assert str(tmp_path / "config.json") in msg and "llava-med-v1.5" in msg
    # such cards name the original-code class, but build (and, once converted, load) the stock class
    tiny_llava = adapter_for("llava-mistral").build_tiny(card)  # convert cards build the stock class
    assert type(tiny_llava.model).__name__ == "LlavaForConditionalGeneration"
    assert type(tiny_llava.model.model.language_model).__name__ == "MistralModel"


def test_llava_stock_card_also_refuses_original_code_model_type(tmp_path, offline):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_qwen2"}))
    with pytest.raises(AdapterError, match="original LLaVA-code layout"):
        adapter_for("llava-qwen2").load(CARDS["llava-qwen2"], source=str(tmp_path))


def test_wrong_family_checkpoint_is_refused(tmp_path, offline):
    adapter_for("qwen2_vl").save_tiny_checkpoint(CARDS["qwen2_vl"], tmp_path)
    with pytest.raises(AdapterError, match=r"model_type 'qwen2_vl' cannot be loaded by family 'qwen2_5_vl'"):
        adapter_for("qwen2_5_vl").load(CARDS["qwen2_5_vl"], source=str(tmp_path))


def test_card_architecture_and_options_are_checked(tmp_path):
    adapter = adapter_for("gemma3")
    wrong = ModelCard(id="bad", kind="mllm", family="gemma3", architecture="LlavaForConditionalGeneration")
    with pytest.raises(AdapterError, match="not loaded by family 'gemma3'"):
        adapter.build_tiny(wrong)
    with pytest.raises(AdapterError, match=r"unknown load option\(s\) \['image_sise'\]"):
        adapter.load(CARDS["gemma3"], source=str(tmp_path), image_sise=224)
    no_hub = ModelCard(id="nohub", kind="mllm", family="gemma3", architecture="Gemma3ForConditionalGeneration")
    with pytest.raises(AdapterError, match="has no hub_id"):
        adapter.load(no_hub)


def test_hub_source_label_and_offline_flag(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from medprobe.models.hf import loading
    from medprobe.models.hf.loading import pretrained_source

    card = ModelCard(id="c", kind="mllm", family="gemma3", hub_id="google/medgemma-4b-it", revision="abc123")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "hub_unreachable", lambda timeout=0: None)  # as if the hub answered the probe
    src = pretrained_source(card, None, revision=None, dtype="fp16", device="cpu")
    assert src.weights == "hub:google/medgemma-4b-it@abc123" and src.dtype_name == "float16"
    assert src.kwargs == {"local_files_only": False, "revision": "abc123"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # offline, the checkpoint must be in the hub cache (a fake cache entry for org/other@v2)
    repo = tmp_path / "models--org--other"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v2").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    src = pretrained_source(card, "org/other", revision="v2", dtype="fp32", device="cpu")
    assert src.weights == "hub:org/other@v2" and src.kwargs["local_files_only"] is True
    assert src.model_kwargs(device_map="auto")["dtype"] is torch.float32
    assert "trust_remote_code" not in src.model_kwargs()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    plain = ModelCard(id="p", kind="mllm", family="gemma3", hub_id="org/x")
    assert pretrained_source(plain, None, revision=None, dtype="auto", device="cpu").weights == "hub:org/x@main"
