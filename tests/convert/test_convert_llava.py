"""``medprobe convert llava-original``: tiny original-layout checkpoints -> stock llava-hf, and back."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, LlavaForConditionalGeneration

from medprobe.adapter import AdapterError
from medprobe.cli import main
from medprobe_llava.convert import ConversionError, convert_llava_original, llava_hf_to_original
from medprobe.models.zoo import get_adapter, get_card

from ._original import ORIGINAL, TEXT, TOWER, card, images, original_name, tiny_hf, write_original


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def hidden(model, inputs):
    with torch.no_grad():
        return model.model(**inputs, use_cache=False).last_hidden_state


def test_original_checkpoint_converts_and_loads_through_the_llava_adapter(tmp_path, offline):
    src = write_original(tmp_path / "src", "llava_mistral")
    result = convert_llava_original(src, tmp_path / "dst")
    record = result.record
    assert json.loads((tmp_path / "dst" / "medprobe_conversion.json").read_text()) == record
    assert record["source_weight_files"] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert record["dropped_buffers"] == [
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        "model.vision_tower.vision_tower.vision_model.embeddings.position_ids",
    ]
    assert record["vision_config_source"].endswith(f"{TOWER}/config.json")
    source = tiny_hf("mistral")
    image_id = source.config.image_token_index
    rows = source.config.text_config.vocab_size  # the original has one row less (no <image>); <image> comes last
    assert [t for t in record["tokens"] if t["added"]] == [{"token": "<image>", "id": rows - 1, "added": True}]
    assert record["vocab_rows"] == {"before": rows - 1, "after": rows, "new_rows": "mean of the existing rows"}

    # the llava-med card (loader "convert") loads the result through the adapter's real from_pretrained path
    llava_med = get_card("llava-med-v1.5")
    loaded = get_adapter("llava").load(llava_med, source=str(tmp_path / "dst"))
    assert type(loaded.model) is LlavaForConditionalGeneration
    cfg = loaded.model.config
    assert (cfg.text_config.model_type, cfg.vision_feature_layer, cfg.vision_feature_select_strategy) == ("mistral", -2, "default")
    assert (cfg.image_token_index, cfg.image_seq_length) == (rows - 1, 16)
    assert loaded.processor.image_token_id == rows - 1
    assert [s.path for s in loaded.layer_map] == [s.path for s in source.layer_map]
    assert loaded.layer_map["vision.02"].feeds_connector

    # every tensor came across unchanged; the vocabulary moved <image> to the end, its row the mean
    before, after = source.model.state_dict(), loaded.model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        if key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            kept = torch.cat([before[key][:image_id], before[key][image_id + 1:]])
            assert torch.equal(after[key][:-1], kept), key
            torch.testing.assert_close(after[key][-1], kept.mean(dim=0))
        else:
            assert torch.equal(before[key], after[key]), key

    # same text and images through each model's own processor -> the same LLM states
    pics = images(2)
    ins_source = dict(source.processor(images=pics, text=[TEXT] * 2, return_tensors="pt", padding=True))
    ins_converted = dict(loaded.processor(images=pics, text=[TEXT] * 2, return_tensors="pt", padding=True))
    assert torch.equal(ins_source["pixel_values"], ins_converted["pixel_values"])
    assert ((ins_converted["input_ids"] == rows - 1).sum(dim=1) == 16).all()
    torch.testing.assert_close(hidden(source.model, ins_source), hidden(loaded.model, ins_converted), rtol=0, atol=1e-6)

    # and the medprobe preprocess/forward path runs on it with the card's own prompt
    adapter = get_adapter("llava")
    batch = adapter.preprocess(loaded, pics, "which image ?")
    assert batch.roles["image"].sum(dim=1).tolist() == [16, 16]
    adapter.forward(loaded, batch)


def test_the_adapter_still_refuses_the_unconverted_directory(tmp_path, offline):
    src = write_original(tmp_path / "src", "llava_qwen2", shards=1)
    with pytest.raises(AdapterError, match=r"medprobe convert llava-original SRC DST"):
        get_adapter("llava").load(get_card("huatuogpt-vision-7b-original"), source=str(src))


@pytest.mark.parametrize("model_type", sorted(ORIGINAL))
def test_llava_hf_to_original_and_back_is_lossless(model_type, tmp_path, offline):
    text_type = ORIGINAL[model_type][0]
    adapter = get_adapter("llava")
    start = tmp_path / "start"
    adapter.save_tiny_checkpoint(card(text_type), start, seed=0)
    original = llava_hf_to_original(start, tmp_path / "original", max_shard_bytes=40_000)
    raw = json.loads((original / "config.json").read_text())
    assert raw["model_type"] == model_type and raw["architectures"] == [ORIGINAL[model_type][1]]
    assert (raw["mm_projector_type"], raw["mm_vision_select_layer"], raw["mm_vision_select_feature"]) == ("mlp2x_gelu", -2, "patch")
    shards = sorted(p.name for p in original.glob("model-*.safetensors"))
    assert len(shards) > 1 and (original / "model.safetensors.index.json").is_file()
    keys = set(json.loads((original / "model.safetensors.index.json").read_text())["weight_map"])
    hf_keys = set(tiny_hf(text_type).model.state_dict())
    assert keys == {original_name(k) for k in hf_keys}  # the original names, as LLaVA's code writes them

    back = convert_llava_original(original, tmp_path / "back")
    assert not any(t["added"] for t in back.record["tokens"])  # <image> already there: nothing resized
    a = adapter.load(card(text_type), source=str(start))
    b = adapter.load(card(text_type), source=str(back.path))
    sd_a, sd_b = a.model.state_dict(), b.model.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) and sd_a[k].dtype == sd_b[k].dtype for k in sd_a)
    for field in ("image_token_index", "image_seq_length", "vision_feature_layer", "vision_feature_select_strategy",
                  "projector_hidden_act", "multimodal_projector_bias"):
        assert getattr(a.config, field) == getattr(b.config, field), field
    ta, tb = a.config.text_config.to_dict(), b.config.text_config.to_dict()
    assert {k: ta[k] for k in ta if k != "_name_or_path"} == {k: tb[k] for k in tb if k != "_name_or_path"}
    assert a.config.vision_config.to_dict() == b.config.vision_config.to_dict()
    pics = images(3)
    batch_a = adapter.preprocess(a, pics, "which image ?")
    batch_b = adapter.preprocess(b, pics, "which image ?")
    assert torch.equal(batch_a.inputs["input_ids"], batch_b.inputs["input_ids"])
    assert torch.equal(batch_a.inputs["pixel_values"], batch_b.inputs["pixel_values"])
    assert torch.equal(hidden(a.model, batch_a.inputs), hidden(b.model, batch_b.inputs))


def test_an_unmapped_or_missing_key_fails_naming_it(tmp_path, offline):
    def extra(t):
        t["model.vision_resampler.weight"] = torch.zeros(2)

    src = write_original(tmp_path / "a", edit=extra)
    with pytest.raises(ConversionError, match=r"match no mapping rule: model\.vision_resampler\.weight"):
        convert_llava_original(src, tmp_path / "out")

    def missing(t):
        del t["model.layers.1.mlp.up_proj.weight"]

    src = write_original(tmp_path / "b", edit=missing)
    with pytest.raises(ConversionError, match=r"not provided: model\.language_model\.layers\.1\.mlp\.up_proj\.weight"):
        convert_llava_original(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_mm_settings_carry_into_the_config_and_processor(tmp_path, offline):
    src = write_original(
        tmp_path / "src", "llava_llama",
        config_update={"image_aspect_ratio": "pad", "mm_vision_select_feature": "cls_patch", "mm_vision_select_layer": -3,
                       "some_training_flag": True},
    )
    result = convert_llava_original(src, tmp_path / "dst")
    assert result.record["dropped_config_fields"] == ["some_training_flag"]
    model_card = card("llama")
    loaded = get_adapter("llava").load(model_card, source=str(tmp_path / "dst"))
    cfg = loaded.config
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy, cfg.image_seq_length) == (-3, "full", 17)
    assert loaded.layer_map["vision.01"].feeds_connector  # block -3 of 4
    image_processor = loaded.processor.image_processor
    assert type(image_processor).__name__ == "LlavaImageProcessor" and image_processor.do_pad
    batch = get_adapter("llava").preprocess(loaded, images(2), "which image ?")
    assert batch.roles["image"].sum(dim=1).tolist() == [17, 17]  # CLS kept
    get_adapter("llava").forward(loaded, batch)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"mm_projector_type": "linear"}, "mm_projector_type 'linear'"),
        ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
        ({"image_aspect_ratio": "anyres"}, "anyres"),
        ({"mm_vision_select_feature": "cls"}, "mm_vision_select_feature 'cls'"),
        ({"mm_hidden_size": 64}, "mm_hidden_size 64"),
    ],
)
def test_settings_the_stock_class_cannot_express_are_refused(update, message, tmp_path, offline):
    src = write_original(tmp_path / "src", config_update=update, shards=1)
    with pytest.raises(ConversionError, match=message):
        convert_llava_original(src, tmp_path / "dst")


def test_tower_weights_from_a_separate_clip_checkpoint(tmp_path, offline):
    prefix = "model.vision_tower.vision_tower.vision_model."
    tower = {}

    def strip_tower(t):
        for key in [k for k in t if k.startswith(prefix)]:
            tower[key[len(prefix):]] = t.pop(key)

    src = write_original(tmp_path / "src", edit=strip_tower, tower_config=False,
                         config_update={"mm_vision_tower": "openai/clip-vit-large-patch14-336"})
    with pytest.raises(ConversionError, match="--vision-tower"):
        convert_llava_original(src, tmp_path / "dst")

    # a local CLIP vision checkpoint as transformers' hub copies store it (vision_model.* names)
    clip = tmp_path / "clip"
    clip.mkdir()
    save_file({f"vision_model.{k}": v for k, v in tower.items() if not k.endswith("position_ids")}, str(clip / "model.safetensors"))
    CLIPVisionConfig(**tiny_hf("mistral").config.vision_config.to_dict()).save_pretrained(clip)
    result = convert_llava_original(src, tmp_path / "dst", vision_tower=clip)
    assert result.record["vision_tower_weights"] == str(clip.resolve())
    converted = load_file(str(tmp_path / "dst" / "model.safetensors"))
    reference = tiny_hf("mistral").model.state_dict()
    flat = {k: v for k, v in reference.items() if k.startswith("model.vision_tower.")}
    on_disk = {k: v for k, v in converted.items() if k.startswith("vision_tower.")}
    assert len(flat) == len(on_disk)
    loaded = get_adapter("llava").load(card("mistral"), source=str(tmp_path / "dst"))
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in flat.items())


def test_known_tower_table_is_checked_against_the_weights(tmp_path, offline):
    src = write_original(tmp_path / "src", tower_config=False,
                         config_update={"mm_vision_tower": "openai/clip-vit-large-patch14-336"})
    with pytest.raises(ConversionError, match=r"disagrees with the tower weights \(hidden_size: config 1024 vs weights 32"):
        convert_llava_original(src, tmp_path / "dst")


def test_tied_embeddings_without_lm_head(tmp_path, offline):
    src = write_original(tmp_path / "src", "llava_qwen2", config_update={"tie_word_embeddings": True},
                         edit=lambda t: t.pop("lm_head.weight"))
    convert_llava_original(src, tmp_path / "dst")
    loaded = get_adapter("llava").load(card("qwen2"), source=str(tmp_path / "dst"))
    assert loaded.model.lm_head.weight.data_ptr() == loaded.model.get_input_embeddings().weight.data_ptr()


def test_cli_converts_and_refuses_a_foreign_destination(tmp_path, offline, capsys):
    src = write_original(tmp_path / "src", shards=1)
    main(["convert", "llava-original", str(src), str(tmp_path / "dst")])
    out = capsys.readouterr().out
    assert "LlavaForConditionalGeneration, text mistral" in out and "added tokens <image>=" in out
    assert (tmp_path / "dst" / "config.json").is_file()

    with pytest.raises(SystemExit) as exc:
        main(["convert", "llava-original", str(src), str(tmp_path / "dst")])
    assert exc.value.code == 2 and "not empty" in capsys.readouterr().err
    main(["convert", "llava-original", str(src), str(tmp_path / "dst"), "--overwrite", "--json"])
    assert json.loads(capsys.readouterr().out)["image_token_index"] == 41

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["convert", "llava-original", str(src), str(foreign), "--overwrite"])
    assert "refusing to replace" in capsys.readouterr().err and (foreign / "keep.txt").is_file()
