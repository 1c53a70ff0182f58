"""The zoo catalogue: every shipped card, seen through the real plugin path.

Checks the contract other code relies on (card ids, counts, the paper's model set, adapter settings),
that every timm / open_clip name exists in the installed registries, that card metadata is
self-consistent (base models, unverified/source names, README catalogue), and that malformed card
files fail with a :class:`CardError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import medprobe_zoo
from medprobe.cards import CardError, ModelCard, load_card_file
from medprobe.plugins import discover, get_plugins, set_plugins
from medprobe.models.zoo import get_card, list_cards
from medprobe_zoo.plugin import all_cards

FIELDS = {f.name for f in dataclasses.fields(ModelCard)}
ZOO_DIR = Path(medprobe_zoo.__file__).parent

PAPER_MEDICAL = {
    "medvlm-r1-2b",
    "huatuogpt-vision-7b",
    "huatuogpt-vision-34b",
    "lingshu-7b",
    "lingshu-32b",
    "shizhengpt-7b-vl",
    "shizhengpt-32b-vl",
    "hulu-med-4b",
    "hulu-med-7b",
    "hulu-med-14b",
    "hulu-med-32b",
    "medgemma-4b",
    "medgemma-27b",
    "medgemma-1.5-4b",
}
PAPER_BASES = {"qwen2.5-vl-7b", "gemma-3-4b"}
OTHER_REQUIRED = {"huatuogpt-vision-7b-original", "llava-med-v1.5", "llava-1.5-7b"}
CONTRASTIVE = {"clip-vit-l-14-336", "biomedclip", "pubmedclip", "medsiglip-448"}

#: id -> (family, architecture, loader) fixed by the catalogue contract
REQUIRED_MLLM = {
    "medvlm-r1-2b": ("qwen2_vl", "Qwen2VLForConditionalGeneration", "stock"),
    "huatuogpt-vision-7b": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "stock"),
    "huatuogpt-vision-7b-original": ("llava", "LlavaQwen2ForCausalLM", "convert"),
    "huatuogpt-vision-34b": ("llava", "LlavaLlamaForCausalLM", "convert"),
    "lingshu-7b": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "stock"),
    "lingshu-32b": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "stock"),
    "shizhengpt-7b-vl": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "stock"),
    "shizhengpt-32b-vl": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "stock"),
    "hulu-med-4b": ("hulumed", "HulumedQwen3ForCausalLM", "remote-code"),
    "hulu-med-7b": ("hulumed", "HulumedQwen2ForCausalLM", "remote-code"),
    "hulu-med-14b": ("hulumed", "HulumedQwen3ForCausalLM", "remote-code"),
    "hulu-med-32b": ("hulumed", "HulumedQwen2ForCausalLM", "remote-code"),
    "medgemma-4b": ("gemma3", "Gemma3ForConditionalGeneration", "stock"),
    "medgemma-27b": ("gemma3", "Gemma3ForConditionalGeneration", "stock"),
    "medgemma-1.5-4b": ("gemma3", "Gemma3ForConditionalGeneration", "stock"),
    "qwen2.5-vl-7b": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "stock"),
    "gemma-3-4b": ("gemma3", "Gemma3ForConditionalGeneration", "stock"),
    "llava-med-v1.5": ("llava", "LlavaMistralForCausalLM", "convert"),
    "llava-1.5-7b": ("llava", "LlavaForConditionalGeneration", "stock"),
}


@pytest.fixture(scope="module")
def cards() -> dict[str, ModelCard]:
    """Cards registered by the zoo plugin through entry-point discovery, by id."""
    set_plugins(None)
    state = get_plugins()
    zoo_errors = [str(e) for e in state.errors if e.plugin == "zoo"]
    assert not zoo_errors, zoo_errors
    zoo_ids = {e.name for e in state.models if e.origin.plugin == "zoo"}
    registered = {c.id: c for c in list_cards() if c.id in zoo_ids}
    yield registered
    set_plugins(None)


@pytest.fixture(scope="module")
def timm_cards(cards):
    return [c for c in cards.values() if c.family == "timm"]


# ------------------------------------------------------------------ registration and counts


def test_every_card_file_is_registered_once(cards):
    shipped = all_cards()
    ids = [c.id for c in shipped]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert set(ids) == set(cards), "cards shipped in cards/*.toml but hidden or missing in the registry"
    assert not get_plugins().models.conflicts
    files = sorted(p.name for p in (ZOO_DIR / "cards").glob("*.toml"))
    assert files, "no card files shipped"
    for name in files:
        assert load_card_file(ZOO_DIR / "cards" / name), f"{name} holds no card"


def test_counts(cards):
    kinds = Counter(c.kind for c in cards.values())
    assert kinds["mllm"] >= 16
    assert kinds["baseline"] >= 26


def test_discover_sees_the_same_cards(cards):
    state = discover()
    assert {e.name for e in state.models if e.origin.plugin == "zoo"} == set(cards)


# ------------------------------------------------------------------ the paper's model set


def test_required_ids_present(cards):
    missing = (PAPER_MEDICAL | PAPER_BASES | OTHER_REQUIRED | CONTRASTIVE | {"resnet50"}) - set(cards)
    assert not missing


def test_paper_models_flagged(cards):
    in_paper = {c.id for c in cards.values() if c.in_paper}
    assert in_paper == PAPER_MEDICAL | PAPER_BASES
    assert len(PAPER_MEDICAL) == 14
    for cid in PAPER_MEDICAL:
        assert cards[cid].kind == "mllm" and cards[cid].category == "medical", cid
    for cid in PAPER_BASES:
        assert cards[cid].kind == "mllm" and cards[cid].category == "general", cid
    for cid in OTHER_REQUIRED:
        assert not cards[cid].in_paper, cid


@pytest.mark.parametrize("card_id", sorted(REQUIRED_MLLM))
def test_required_mllm_identity(cards, card_id):
    card = cards[card_id]
    assert (card.family, card.architecture, card.loader) == REQUIRED_MLLM[card_id]
    assert card.hub_id and "/" in card.hub_id


def test_medical_models_name_their_zoo_base(cards):
    assert cards["lingshu-7b"].base_model == "qwen2.5-vl-7b"
    assert cards["huatuogpt-vision-7b"].base_model == "qwen2.5-vl-7b"
    assert cards["shizhengpt-7b-vl"].base_model == "qwen2.5-vl-7b"
    assert cards["medgemma-4b"].base_model == "gemma-3-4b"
    assert cards["medgemma-1.5-4b"].base_model == "gemma-3-4b"
    assert cards["huatuogpt-vision-7b"].hub_id == "FreedomIntelligence/HuatuoGPT-Vision-7B-Qwen2.5VL"
    assert cards["huatuogpt-vision-7b-original"].hub_id == "FreedomIntelligence/HuatuoGPT-Vision-7B"


def test_base_model_references(cards):
    for card in cards.values():
        if card.base_model is None:
            continue
        assert card.base_model in cards, f"{card.id}: base_model {card.base_model!r} is not a card"
        base = cards[card.base_model]
        assert base.kind == "mllm" and base.category == "general", card.id
        assert base.family == card.family, f"{card.id}: base {base.id} is another family"
        assert card.category == "medical", card.id


# ------------------------------------------------------------------ card metadata


def test_ids_and_aliases_unique(cards):
    for cid in cards:
        assert cid == cid.lower() and " " not in cid, cid
    aliases = [a for c in cards.values() for a in c.aliases]
    assert len(aliases) == len(set(aliases)), [a for a, n in Counter(aliases).items() if n > 1]
    assert not set(aliases) & set(cards)
    assert get_card("resnet50.a1_in1k").id == "resnet50"
    assert get_card("medgemma-4b-it").id == "medgemma-4b"


def test_unverified_and_sources_name_real_fields(cards):
    for card in cards.values():
        bad = set(card.unverified) - FIELDS
        assert not bad, f"{card.id}: unverified names {bad} are not ModelCard fields"
        bad = set(card.sources) - FIELDS
        assert not bad, f"{card.id}: sources name {bad}, not ModelCard fields"
        assert len(card.unverified) == len(set(card.unverified)), card.id
        undocumented = set(card.unverified) - set(card.sources)
        assert not undocumented, f"{card.id}: unverified {undocumented} without a sources entry"


def test_study_unverified_facts_are_marked(cards):
    # facts no public source read so far confirms
    assert {"hub_id", "architecture"} <= set(cards["medsiglip-448"].unverified)
    assert "architecture" in cards["medgemma-27b"].unverified
    assert "architecture" in cards["medgemma-1.5-4b"].unverified
    assert "architecture" in cards["hulu-med-7b"].unverified
    assert "architecture" in cards["hulu-med-32b"].unverified
    assert "llm" in cards["shizhengpt-7b-vl"].unverified
    assert "license" in cards["huatuogpt-vision-7b"].unverified
    assert "license" in cards["huatuogpt-vision-34b"].unverified
    assert "llm" in cards["lingshu-32b"].unverified
    assert "prompt_template" in cards["llava-med-v1.5"].unverified


def test_mllm_facts_are_sourced(cards):
    for card in cards.values():
        if card.kind != "mllm":
            continue
        for fact in ("hub_id", "architecture", "vision_encoder", "connector", "llm", "image_tokens"):
            assert getattr(card, fact), f"{card.id}: {fact} missing"
        for fact in ("hub_id", "architecture", "params", "license", "vision_encoder", "connector", "llm",
                     "image_tokens", "prompt_template", "base_model"):
            if getattr(card, fact):
                assert card.sources.get(fact), f"{card.id}: {fact} has no source"
        if card.license is None:
            assert "license" in card.unverified, f"{card.id}: unknown license not marked"
        if card.prompt_template is not None:
            assert card.prompt_template.count("{question}") == 1, card.id
            assert card.prompt_template.format(question="Is there a tumour?").count("Is there a tumour?") == 1


def test_loader_matches_family(cards):
    expected = {"timm": "timm", "open_clip": "open_clip", "hf_clip": "stock", "hulumed": "remote-code"}
    for card in cards.values():
        if card.family in expected:
            assert card.loader == expected[card.family], card.id
        if card.loader == "remote-code":
            assert card.kind == "mllm"


# ------------------------------------------------------------------ adapter settings


def test_qwen_settings(cards):
    qwen = [c for c in cards.values() if c.family in ("qwen2_vl", "qwen2_5_vl")]
    assert len(qwen) >= 8
    for card in qwen:
        assert card.setting("image_size") == 448, card.id


def test_llava_settings(cards):
    originals = {
        "huatuogpt-vision-7b-original": ("qwen2", "llava_qwen2"),
        "huatuogpt-vision-34b": ("llama", "llava_llama"),
        "llava-med-v1.5": ("mistral", "llava_mistral"),
    }
    for card in (c for c in cards.values() if c.family == "llava"):
        assert card.setting("vision_feature_layer") == -2, card.id
        assert card.setting("vision_feature_select_strategy") == "default", card.id
        assert card.setting("image_size") == 336, card.id
        assert card.setting("text_model_type") in ("llama", "mistral", "qwen2"), card.id
        if card.loader == "convert":
            assert (card.setting("text_model_type"), card.setting("original_model_type")) == originals[card.id]
        else:
            assert card.setting("original_model_type") is None, card.id
    assert cards["llava-1.5-7b"].setting("text_model_type") == "llama"


def test_hulumed_settings(cards):
    hulu = [c for c in cards.values() if c.family == "hulumed"]
    assert len(hulu) == 4
    for card in hulu:
        want = "qwen3" if "Qwen3" in card.architecture else "qwen2"
        assert card.setting("llm_model_type") == want, card.id
        assert card.revision is None and "2025-10-15" in card.notes, card.id


def test_gemma3_cards_are_stock(cards):
    for card in (c for c in cards.values() if c.family == "gemma3"):
        assert card.loader == "stock" and card.architecture == "Gemma3ForConditionalGeneration"
        assert card.setting("image_size", 896) == 896


# ------------------------------------------------------------------ baselines: timm


def test_timm_split(timm_cards):
    assert Counter(c.category for c in timm_cards) == {"cnn": 8, "mlp": 4, "vit": 4, "hybrid": 7}
    for card in timm_cards:
        assert card.kind == "baseline" and card.loader == "timm", card.id


def test_timm_names_exist_and_match_pretrained_cfg(timm_cards):
    import timm

    pretrained = set(timm.list_pretrained())
    for card in timm_cards:
        name = card.setting("timm_name")
        assert name in pretrained, f"{card.id}: {name} not in timm.list_pretrained()"
        assert card.architecture == name.split(".", 1)[0], card.id
        assert name in card.aliases, card.id
        cfg = timm.models.get_pretrained_cfg(name)
        assert card.setting("image_size") == cfg.input_size[-1], card.id
        assert card.hub_id == cfg.hf_hub_id, card.id
        assert card.license == cfg.license, card.id


def test_timm_param_counts(timm_cards):
    """The params of each card match the architecture built on the meta device (no weights)."""
    import timm
    import torch

    for card in timm_cards:
        with torch.device("meta"):
            model = timm.create_model(card.architecture, pretrained=False)
        n = sum(p.numel() for p in model.parameters())
        stated = float(re.fullmatch(r"([\d.]+)M", card.params).group(1)) * 1e6
        assert abs(stated - n) <= 0.01e6, f"{card.id}: card says {card.params}, model has {n}"


# ------------------------------------------------------------------ baselines: contrastive


def test_contrastive_cards(cards):
    contrastive = {c.id for c in cards.values() if c.category == "contrastive"}
    assert contrastive == CONTRASTIVE
    clip = cards["clip-vit-l-14-336"]
    assert (clip.family, clip.loader, clip.setting("model_name"), clip.setting("pretrained")) == (
        "open_clip", "open_clip", "ViT-L-14-336", "openai")
    bmc = cards["biomedclip"]
    assert bmc.family == "open_clip"
    assert bmc.setting("model_name") == "hf-hub:" + bmc.hub_id
    pmc = cards["pubmedclip"]
    assert (pmc.family, pmc.loader, pmc.architecture, pmc.setting("model_class")) == (
        "hf_clip", "stock", "CLIPModel", "CLIPModel")
    assert pmc.hub_id == "flaviagiammarino/pubmed-clip-vit-base-patch32"
    msl = cards["medsiglip-448"]
    assert (msl.family, msl.architecture, msl.setting("model_class"), msl.hub_id) == (
        "hf_clip", "SiglipModel", "SiglipModel", "google/medsiglip-448")


def test_open_clip_names_exist(cards):
    import open_clip

    models = set(open_clip.list_models())
    checked = 0
    for card in (c for c in cards.values() if c.family == "open_clip"):
        name = card.setting("model_name")
        if name.startswith("hf-hub:"):
            assert card.setting("pretrained") is None, card.id
            continue
        assert name in models, f"{card.id}: {name} not in open_clip.list_models()"
        assert card.setting("pretrained") in open_clip.list_pretrained_tags_by_model(name), card.id
        assert card.setting("image_size") == open_clip.get_model_config(name)["vision_cfg"]["image_size"]
        checked += 1
    assert checked >= 1


# ------------------------------------------------------------------ README catalogue


def test_readme_catalogue_matches_cards(cards):
    text = (ZOO_DIR / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| `([^`]+)` \| (mllm|baseline) \|", line)
        if m:
            assert m.group(1) not in rows, f"README lists {m.group(1)} twice"
            rows[m.group(1)] = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
    assert set(rows) == set(cards)
    for cid, cells in rows.items():
        card = cards[cid]
        assert cells[2] == card.family, cid
        listed = [] if cells[-1] == "—" else [s.strip() for s in cells[-1].split(",")]
        assert listed == list(card.unverified), f"README UNVERIFIED column of {cid} differs from the card"


# ------------------------------------------------------------------ malformed card files


GOOD = '[[card]]\nid = "tiny"\nkind = "baseline"\nfamily = "timm"\nloader = "timm"\n'


@pytest.mark.parametrize(
    "body, needle",
    [
        (GOOD + 'colour = "red"\n', "unknown fields"),
        (GOOD.replace('"baseline"', '"vlm"'), "kind"),
        (GOOD + GOOD, "duplicate card ids"),
        ('[[card]]\nid = "tiny"\nkind = "baseline\n', "cannot read card file"),
        ('title = "no card table"\n', "[[card]]"),
        (GOOD.replace('loader = "timm"', 'loader = " "'), "loader"),
        ('[[card]]\nid = "x"\nkind = "mllm"\nfamily = ""\n', "family"),
    ],
    ids=["unknown-field", "bad-kind", "duplicate-id", "broken-toml", "no-card-table", "bad-loader", "no-family"],
)
def test_malformed_card_file_names_the_file(tmp_path, body, needle):
    path = tmp_path / "broken_cards.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(CardError) as info:
        load_card_file(path)
    message = str(info.value)
    assert str(path) in message
    assert needle in message


def test_valid_tmp_card_file_loads(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD + 'unverified = ["params"]\n[card.settings]\ntimm_name = "resnet18.a1_in1k"\n', encoding="utf-8")
    (card,) = load_card_file(path)
    assert card.id == "tiny" and card.unverified == ("params",) and card.setting("timm_name") == "resnet18.a1_in1k"


# ------------------------------------------------------------------ CLI and import weight


def test_cli_models_list_json(cards):
    from medprobe.cli import cli

    set_plugins(None)
    out = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert out.exit_code == 0, out.output
    listed = {d["id"]: d for d in json.loads(out.output)}
    assert set(cards) <= set(listed)
    assert listed["resnet50"]["settings"]["timm_name"] == cards["resnet50"].setting("timm_name")

    out = CliRunner().invoke(cli, ["models", "list", "medgemma*", "--kind", "mllm", "--json"])
    assert out.exit_code == 0, out.output
    assert {d["id"] for d in json.loads(out.output)} == {"medgemma-4b", "medgemma-27b", "medgemma-1.5-4b"}


def test_cli_models_show_json(cards):
    from medprobe.cli import cli

    set_plugins(None)
    out = CliRunner().invoke(cli, ["models", "show", "lingshu-7b", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["id"] == "lingshu-7b"
    assert data["hub_id"] == "lingshu-medical-mllm/Lingshu-7B"
    assert data["base_model"] == "qwen2.5-vl-7b"
    assert data["in_paper"] is True
    assert data["settings"] == {"image_size": 448}
    assert data["unverified"] == list(cards["lingshu-7b"].unverified)
    assert set(data["sources"]) >= {"hub_id", "architecture", "license"}
    assert "zoo" in data["registered_by"]

    out = CliRunner().invoke(cli, ["models", "show", "lingshu-7b"])
    assert out.exit_code == 0, out.output
    assert "(UNVERIFIED)" in out.output


def test_reading_cards_imports_no_model_code():
    code = (
        "import sys\n"
        "from medprobe_zoo.plugin import all_cards\n"
        "assert len(all_cards()) >= 42\n"
        "heavy = [m for m in ('torch', 'transformers', 'timm', 'open_clip') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
