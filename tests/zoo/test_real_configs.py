"""Every MLLM card at full size, offline: its published config.json built on the meta device.

Oracles: the widths, depths, image tokens and parameter counts the cards state (their text), the
public parameter figures (Qwen2.5-VL-7B 8.292B with a 676.6M ViT, counted from the upstream
tensors at huggingface.co/OpenExplorer/Qwen2.5-VL-7B-Instruct; HuatuoGPT-Vision-7B 7.94B and
the paper's 34.75B upper bound for HuatuoGPT-Vision-34B), and the image-token positions the
family adapter's own preprocessing produces with the published processor settings, run through
a full-width model truncated to its first blocks (random weights: only shapes are checked).
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from medprobe.cli import cli
from medprobe.grid.resources import extraction_estimate
from medprobe.models.meta import MetaError, build_meta, read_published
from medprobe.models.zoo import get_adapter, get_card, list_cards

ROOT = Path(__file__).resolve().parents[2]
MLLMS = [c.id for c in list_cards(kind="mllm")]

#: card -> (vision blocks, vision width, connector width, LLM layers, LLM width,
#:          vision tokens per image, LLM image tokens per image, exact parameter count)
EXPECTED = {
    "qwen2-vl-2b": (32, 1280, 1536, 28, 1536, 1024, 256, 2_208_985_600),
    "qwen2.5-vl-7b": (32, 1280, 3584, 28, 3584, 1024, 256, 8_292_166_656),
    "gemma-3-4b": (27, 1152, 2560, 34, 2560, 4096, 256, 4_300_079_472),
    "llava-1.5-7b": (24, 1024, 4096, 32, 4096, 577, 576, 7_063_427_072),
    "huatuogpt-vision-7b-original": (24, 1024, 3584, 28, 3584, 577, 576, 7_935_646_208),
    "huatuogpt-vision-34b": (24, 1024, 7168, 60, 7168, 577, 576, 34_751_159_296),
    "llava-med-v1.5": (24, 1024, 4096, 32, 4096, 577, 576, 7_566_219_264),
}
#: cards resolved on their base's config (their own config.json was not found)
FALLBACK = {
    "medvlm-r1-2b": "qwen2-vl-2b",
    "huatuogpt-vision-7b": "qwen2.5-vl-7b",
    "lingshu-7b": "qwen2.5-vl-7b",
    "shizhengpt-7b-vl": "qwen2.5-vl-7b",
    "medgemma-4b": "gemma-3-4b",
    "medgemma-1.5-4b": "gemma-3-4b",
}
#: cards without a full-size map offline, and why (their sources say so)
NO_META = {
    "qwen2.5-vl-32b": "NOT FOUND", "lingshu-32b": "NOT FOUND", "shizhengpt-32b-vl": "NOT FOUND",
    "medgemma-27b": "NOT FOUND",
    "hulu-med-4b": "NOT BUILT", "hulu-med-7b": "NOT BUILT", "hulu-med-14b": "NOT BUILT", "hulu-med-32b": "NOT BUILT",
}

_CACHE: dict[str, object] = {}


def meta_of(card_id: str):
    if card_id not in _CACHE:
        card = get_card(card_id)
        _CACHE[card_id] = build_meta(card, get_adapter(card.family))
    return _CACHE[card_id]


def test_every_mllm_card_is_classified():
    assert set(MLLMS) == set(EXPECTED) | set(FALLBACK) | set(NO_META)


@pytest.mark.parametrize("card_id", sorted(set(EXPECTED) | set(FALLBACK)))
def test_full_size_meta_map_matches_the_card(card_id):
    base = FALLBACK.get(card_id, card_id)
    vdepth, vwidth, cwidth, ldepth, lwidth, vtokens, ltokens, params = EXPECTED[base]
    card = get_card(card_id)
    meta = meta_of(card_id)
    assert all(p.device.type == "meta" for p in meta.model.parameters())
    stages: dict[str, list] = {}
    for spec in meta.layer_map:
        stages.setdefault(spec.stage, []).append(spec)
    assert [len(stages[s]) for s in ("vision", "connector", "llm")] == [vdepth, 1, ldepth]
    assert {s.width for s in stages["vision"]} == {vwidth}
    assert stages["connector"][0].width == cwidth and {s.width for s in stages["llm"]} == {lwidth}
    assert meta.parameters == params
    assert (meta.image_tokens.vision, meta.image_tokens.llm) == (vtokens, ltokens)
    # the card's own text states the same depths and widths
    m = re.search(r"(\d+) (?:blocks|layers) x (\d+)", card.vision_encoder or "")
    if m:
        assert (int(m.group(1)), int(m.group(2))) == (vdepth, vwidth), card.vision_encoder
    m = re.search(r"(\d+) layers x (\d+)", card.llm or "")
    assert m and (int(m.group(1)), int(m.group(2))) == (ldepth, lwidth), card.llm
    assert str(ltokens) in (card.image_tokens or ""), card.image_tokens
    # and its parameter figure, where it states one (hub listings round: within 6 %)
    m = re.search(r"(\d+(?:\.\d+)?)B", card.params or "")
    assert m or card.params is None, card.params
    if m:
        assert abs(params / 1e9 - float(m.group(1))) / float(m.group(1)) < 0.06, (card.params, params)
    # the block feeding the connector, and the blocks the MLLM never uses
    feeds = [s.id for s in meta.layer_map if s.feeds_connector]
    unused = [s.id for s in meta.layer_map if not s.used]
    if card.family == "llava":
        assert feeds == [f"vision.{vdepth - 2:02d}"] and unused == [f"vision.{vdepth - 1:02d}"]
    else:
        assert feeds == [f"vision.{vdepth - 1:02d}"] and unused == []
    published = read_published(card)
    # own config (or a verbatim copy of it) for the bases; qwen2.5-vl-7b's is a fine-tune's republication
    assert published.own == (card_id in EXPECTED and card_id != "qwen2.5-vl-7b")
    assert published.architecture_of == (get_card(base).hub_id if card_id in FALLBACK else card.hub_id)
    if card_id in FALLBACK:
        assert meta.notes and "no config.json" in meta.notes[0]
        assert "no config.json" in card.sources["published_config"]


def test_public_parameter_figures():
    q = meta_of("qwen2.5-vl-7b")
    vit = sum(p.numel() for p in q.model.model.visual.parameters())
    assert round(q.parameters / 1e9, 3) == 8.292 and round(vit / 1e6, 1) == 676.6
    assert round(meta_of("huatuogpt-vision-7b-original").parameters / 1e9, 2) == 7.94
    assert round(meta_of("huatuogpt-vision-34b").parameters / 1e9, 2) == 34.75
    # the original-code LLaVA towers fall back on CLIP ViT-L/14-336: the llava-1.5 vision config
    llava = meta_of("llava-1.5-7b").config.vision_config
    huatuo = meta_of("huatuogpt-vision-7b-original").config.vision_config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size"):
        assert getattr(huatuo, key) == getattr(llava, key), key


@pytest.mark.parametrize("card_id", sorted(NO_META))
def test_cards_without_a_full_size_config_say_so(card_id):
    card = get_card(card_id)
    assert card.published_config is None
    assert card.sources["published_config"].startswith(NO_META[card_id])
    with pytest.raises(MetaError, match=re.escape(card.id)):
        build_meta(card, get_adapter(card.family))


def test_published_configs_are_package_data_with_sources():
    names = sorted(p.name for p in resources.files("medprobe_zoo").joinpath("configs").iterdir() if p.name.endswith(".json"))
    used = sorted({c.published_config.split(":", 1)[1].split("/")[-1] for c in list_cards() if c.published_config})
    assert names == used
    for name in names:
        data = json.loads(resources.files("medprobe_zoo").joinpath("configs", name).read_text())
        assert data["config_source"]["url"].startswith("https://huggingface.co/"), name
        assert data["processor"] is None or data["processor_source"]["url"].startswith("https://huggingface.co/")
    assert '"configs/*.json"' in (ROOT / "pyproject.toml").read_text()


def test_extraction_estimate_formula():
    meta = meta_of("lingshu-7b")
    est = extraction_estimate(meta, n=3000, dtype="bfloat16", batch_size=8, readouts="image-mean,last-token")
    per_row = sum(s.width * (2 if s.stage == "llm" else 1) for s in meta.layer_map)
    assert est["feature_store_bytes"] == 3000 * per_row * 4
    assert est["weights_bytes"] == 8_292_166_656 * 2
    # widest block: an LLM layer, 256 image + 64 prompt tokens, width 3584, MLP 18944 wide
    assert est["activation_bytes"] == 8 * (256 + 64) * (3 * 3584 + 2 * 18944) * 2
    assert est["gpu_bytes"] == est["weights_bytes"] + est["activation_bytes"] + est["feature_buffer_bytes"]


def test_models_layers_cli_full_size():
    result = CliRunner().invoke(cli, ["models", "layers", "lingshu-7b", "--n", "1000", "--select", "vision.31,connector,llm.27"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "61 layers, resolved against meta-device Qwen2_5_VLForConditionalGeneration" in out
    assert "parameters: 8,292,166,656 (8.29B)" in out
    assert "image tokens per image at 448 px: vision blocks 1024, connector 256, LLM 256" in out
    assert "model.visual.blocks.31" in out and "feeds-connector" in out and "model.language_model.layers.27" in out
    assert "note: no config.json of lingshu-medical-mllm/Lingshu-7B was found" in out
    assert "GPU memory at bfloat16, batch 8" in out
    data = json.loads(CliRunner().invoke(cli, ["models", "layers", "llava-1.5-7b", "--json"]).output)
    assert data["tiny"] is False and data["meta"]["parameters"] == 7_063_427_072
    assert data["meta"]["image_tokens"]["llm"] == 576 and len(data["layers"]) == 57
    import medprobe as mp

    assert mp.full_size("llava-1.5-7b").to_dict() == data["meta"]  # the Python twin of the command


def test_models_layers_cli_refusals_are_one_line(capsys):
    from medprobe.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["models", "layers", "lingshu-32b"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "records no published config.json" in err and "--tiny" in err
    result = CliRunner().invoke(cli, ["models", "layers", "lingshu-7b", "--tiny", "--n", "10"])
    assert result.exit_code != 0 and "drop --tiny" in result.output
    with pytest.raises(SystemExit):
        main(["models", "layers", "lingshu-7b", "--n", "10", "--dtype", "bf17"])
    assert "dtype 'bf17': unknown" in capsys.readouterr().err


# ---------------------------------------------------------------- real processor settings
#: the truncated models keep every real width (vision, connector, LLM hidden size) and cut depth;
#: the LLM's MLP intermediate is narrowed so the one LLM block runs in seconds on a CPU (it does
#: not change any sequence length or hidden width checked here)
SMALL_MLP = 512



def _truncated(card_id: str, edit, edit_config=None) -> tuple:
    """The card's adapter, a processor from its published processor settings (offline word
    tokenizer) and a full-width model cut to its first blocks, random weights (seed 0)."""
    import torch

    card = get_card(card_id)
    adapter = get_adapter(card.family)
    published = read_published(card)
    full = adapter.meta_config(card, published.config)
    processor = adapter.published_processor(card, full, published.processor)
    raw = copy.deepcopy(dict(published.config))
    edit(raw, processor.tokenizer)
    config = adapter.meta_config(card, raw)
    if edit_config is not None:
        edit_config(config, processor.tokenizer)
    torch.manual_seed(0)
    model = adapter.model_class(card)(config).eval()
    return card, adapter, processor, model


def _run(card, adapter, processor, model, side: int):
    from PIL import Image

    from medprobe.adapter import LoadedModel

    loaded = LoadedModel(
        card=card, model=model, processor=processor, config=model.config, adapter=adapter,
        layer_map=adapter.layer_map(card, model, model.config), weights="random-init (truncated full-width test model)",
        extra=adapter.loaded_extra(card, model, processor, {}),
    )
    batch = adapter.preprocess(loaded, [Image.new("RGB", (side, side), (90, 120, 150))], "Is there a lesion?")
    outputs = {}
    hooks = [
        model.get_submodule(s.path).register_forward_hook(
            lambda mod, args, out, sid=s.id: outputs.__setitem__(sid, (out[0] if isinstance(out, tuple) else out).shape)
        )
        for s in loaded.layer_map
    ]
    try:
        adapter.forward(loaded, batch)
    finally:
        for h in hooks:
            h.remove()
    return batch, outputs


@pytest.mark.slow
def test_qwen25_vl_preprocessing_gives_256_image_positions_at_448():
    def edit(raw, tok):
        raw.update(num_hidden_layers=1, intermediate_size=SMALL_MLP, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                   video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                   vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                   vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
        raw["vision_config"].update(depth=1, fullatt_block_indexes=[0])

    card, adapter, processor, model = _truncated("lingshu-7b", edit)
    batch, out = _run(card, adapter, processor, model, 448)
    assert batch.roles["image"].sum(dim=1).tolist() == [256]
    assert batch.packed == {"vision": [1024], "connector": [256]}
    assert tuple(out["vision.00"]) == (1024, 1280) and tuple(out["connector"]) == (256, 3584)
    assert out["llm.00"][-1] == 3584 and out["llm.00"][1] == batch.inputs["input_ids"].shape[1]


@pytest.mark.slow
def test_qwen2_vl_preprocessing_gives_256_image_positions_at_448():
    def edit(raw, tok):
        raw.update(num_hidden_layers=1, intermediate_size=SMALL_MLP, vocab_size=len(tok), tie_word_embeddings=False,
                   image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                   video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                   vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                   vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
        raw["vision_config"].update(depth=1)

    card, adapter, processor, model = _truncated("medvlm-r1-2b", edit)
    batch, out = _run(card, adapter, processor, model, 448)
    assert batch.roles["image"].sum(dim=1).tolist() == [256]
    assert tuple(out["vision.00"]) == (1024, 1280) and tuple(out["connector"]) == (256, 1536)


@pytest.mark.slow
def test_gemma3_preprocessing_gives_256_soft_tokens():
    def edit(raw, tok):
        raw.update(image_token_index=tok.image_token_id, boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id)
        raw["text_config"].update(num_hidden_layers=1, intermediate_size=SMALL_MLP, vocab_size=len(tok))
        raw["vision_config"].update(num_hidden_layers=1)

    card, adapter, processor, model = _truncated("medgemma-4b", edit)
    batch, out = _run(card, adapter, processor, model, 896)
    assert batch.roles["image"].sum(dim=1).tolist() == [256]
    assert tuple(out["vision.00"]) == (1, 4096, 1152) and tuple(out["connector"]) == (1, 256, 2560)


@pytest.mark.slow
@pytest.mark.parametrize("card_id,width", [("llava-1.5-7b", 4096), ("huatuogpt-vision-7b-original", 3584), ("llava-med-v1.5", 4096)])
def test_llava_preprocessing_gives_576_image_positions_at_336(card_id, width):
    def edit(raw, tok):
        if raw["model_type"] == "llava":
            raw.update(image_token_index=tok.image_token_id)
            raw["text_config"].update(num_hidden_layers=1, intermediate_size=SMALL_MLP, vocab_size=len(tok))
            raw["vision_config"].update(num_hidden_layers=2)
        else:  # original LLaVA code: text fields at the top level
            raw.update(num_hidden_layers=1, intermediate_size=SMALL_MLP, vocab_size=len(tok))

    def edit_config(config, tok):  # the original layout names its tower; cut the mapped CLIP config here
        config.vision_config.num_hidden_layers = 2
        config.image_token_index = tok.image_token_id

    card, adapter, processor, model = _truncated(card_id, edit, edit_config)
    batch, out = _run(card, adapter, processor, model, 336)
    assert batch.roles["image"].sum(dim=1).tolist() == [576]
    assert tuple(out["vision.00"]) == (1, 577, 1024) and tuple(out["connector"]) == (1, 576, width)


def test_models_layers_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, json\nfrom medprobe.cli import main\ntry:\n    main(['models', 'layers', '--help'])\n"
            "except SystemExit:\n    pass\nprint(json.dumps('torch' in sys.modules or 'transformers' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "false"
    assert "--dataset" in out.stdout and "--n" in out.stdout


def test_grid_dry_run_sizes_real_weight_jobs_from_the_full_size_map(tmp_path):
    from medprobe.grid import expand_jobs, grid_status, load_experiment

    path = tmp_path / "exp.toml"
    path.write_text(
        '[experiment]\ndevice = "cuda"\ndtype = "bf16"\n[[model]]\nref = "lingshu-7b"\n'
        '[[dataset]]\nspec = "synthetic:lesions?n=40&size=32"\nname = "lesions"\n'
    )
    exp = load_experiment(path)
    (job,) = expand_jobs(exp)
    (st,) = grid_status(exp, [job])
    assert st.status == "pending" and st.run_key is None and st.rows == 40
    meta = meta_of("lingshu-7b")
    from medprobe.features.readouts import applicable, parse_readouts

    wanted = parse_readouts(job.spec["readouts"])
    expected = 40 * sum(s.width * len(applicable(s, wanted)) for s in meta.layer_map.select(job.spec["layers"])) * 4
    assert st.size == expected and st.size_source.startswith("real layer map")
    est = extraction_estimate(meta, n=40, dtype="bfloat16", batch_size=int(job.spec["batch_size"]),
                              layers=job.spec["layers"], readouts=job.spec["readouts"])
    from medprobe.grid.resources import format_size

    assert f"GPU ~{format_size(est['gpu_bytes'])} at bfloat16" in st.note
    code_out = CliRunner().invoke(cli, ["grid", "run", str(path), "--dry-run"])
    assert code_out.exit_code == 0, code_out.output
    assert "GPU ~" in code_out.output and format_size(expected) in code_out.output
