"""Model names users already have: hub ids, local checkpoint directories, ``family:NAME`` for
every family; and the offline / missing-directory messages (no network: an empty hub cache in
tmp, ``HF_HUB_OFFLINE``, or a hub endpoint on a closed loopback port)."""

from __future__ import annotations

import time

import pytest

from medprobe.adapter import AdapterError
from medprobe.models.hf import loading
from medprobe.models.prepare import load_model
from medprobe.models.zoo import get_adapter, get_card
from medprobe.registry import NotFoundError


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """An empty Hugging Face hub cache, and no remembered probe results."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(loading, "_PROBES", {})
    return cache


# -- hub ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, card_id",
    [
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-7b"),
        ("qwen/qwen2.5-vl-7b-instruct", "qwen2.5-vl-7b"),
        ("lingshu-medical-mllm/Lingshu-7B", "lingshu-7b"),
        ("LINGSHU-MEDICAL-MLLM/LINGSHU-7B", "lingshu-7b"),
        ("google/medgemma-4b-it", "medgemma-4b"),
        ("flaviagiammarino/pubmed-clip-vit-base-patch32", "pubmedclip"),
    ],
)
def test_hub_id_names_its_card(ref, card_id):
    assert get_card(ref).id == card_id


def test_unknown_hub_id_says_how_to_name_it():
    with pytest.raises(NotFoundError, match=r"no zoo card has hub id 'someorg/some-model'.*FAMILY:someorg/some-model"):
        get_card("someorg/some-model")


# -- family:NAME for every family ---------------------------------------------------------------
@pytest.mark.parametrize(
    "family, kind, architecture",
    [("llava", "mllm", "LlavaForConditionalGeneration"), ("qwen2_5_vl", "mllm", "Qwen2_5_VLForConditionalGeneration"),
     ("qwen2_vl", "mllm", "Qwen2VLForConditionalGeneration"), ("gemma3", "mllm", "Gemma3ForConditionalGeneration"),
     ("hf_clip", "baseline", "CLIPModel"), ("hulumed", "mllm", "HulumedQwen2ForCausalLM")],
)
def test_family_prefix_takes_a_hub_id(family, kind, architecture):
    card = get_card(f"{family}:someorg/some-model")
    assert (card.id, card.family, card.kind, card.hub_id) == (f"{family}:someorg/some-model", family, kind, "someorg/some-model")
    assert card.architecture == architecture and "ad-hoc" in card.notes


def test_family_prefix_with_a_zoo_hub_id_is_that_card():
    assert get_card("qwen2_5_vl:lingshu-medical-mllm/Lingshu-7B").id == "lingshu-7b"
    assert get_card("llava:lingshu-medical-mllm/Lingshu-7B").id == "llava:lingshu-medical-mllm/Lingshu-7B"  # other family


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "gemma3", "hf_clip", "hulumed"])
def test_family_prefix_with_a_missing_directory(family, tmp_path):
    with pytest.raises(NotFoundError, match="directory does not exist"):
        get_card(f"{family}:{tmp_path / 'missing'}")
    with pytest.raises(NotFoundError, match="expected a hub id ORG/NAME or a local checkpoint directory"):
        get_card(f"{family}:not a name")


def test_timm_and_open_clip_prefixes_still_take_registry_names():
    assert get_card("timm:resnet18.a1_in1k").family == "timm"
    assert get_card("open_clip:ViT-B-32:openai").family == "open_clip"


# -- local checkpoint directories ------------------------------------------------------------
@pytest.mark.parametrize("card_id", ["llava-1.5-7b", "lingshu-7b", "medgemma-4b"])
def test_directory_picks_the_family_and_loads_from_it(card_id, tmp_path):
    card = get_card(card_id)
    adapter = get_adapter(card.family)
    # a directory named like the card's repository takes that card's settings
    named = adapter.save_tiny_checkpoint(card, tmp_path / card.hub_id.split("/")[-1])
    found = get_card(str(named))
    assert found.id == card.id and found.setting("checkpoint_dir") == str(named.resolve())
    assert {k: v for k, v in found.settings.items() if k != "checkpoint_dir"} == dict(card.settings)
    # any other directory: an ad-hoc card of the family its config.json names
    other = adapter.save_tiny_checkpoint(card, tmp_path / "my-finetune")
    adhoc = get_card(str(other))
    assert (adhoc.id, adhoc.family, adhoc.kind) == (f"{card.family}:{other.resolve()}", card.family, "mllm")
    assert get_card(adhoc.id) == adhoc  # the id names the card again (run manifests store it)
    loaded = load_model(str(other))
    assert loaded.weights == f"local:{other.resolve()}" and not loaded.is_random
    assert loaded.layer_map.ids == adapter.build_tiny(card).layer_map.ids


def test_hub_cache_snapshot_directory_is_its_card(tmp_path):
    card = get_card("llava-1.5-7b")
    snapshot = tmp_path / "models--llava-hf--llava-1.5-7b-hf" / "snapshots" / ("a" * 40)
    get_adapter("llava").save_tiny_checkpoint(card, snapshot)
    assert get_card(str(snapshot)).id == "llava-1.5-7b"


def test_directory_errors_name_the_file(tmp_path):
    with pytest.raises(NotFoundError, match="no config.json"):
        get_card(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(NotFoundError, match=r"config.json: model_type 'bert'.*loaded by no installed family"):
        get_card(str(tmp_path))
    with pytest.raises(NotFoundError, match="directory does not exist"):
        get_card(str(tmp_path / "missing"))


@pytest.mark.parametrize("ref, option", [("lingshu-7b", {}), ("pubmedclip", {}), ("resnet18", {}),
                                         ("clip-vit-l-14-336", {})])
def test_source_missing_directory_says_so(ref, option, tmp_path):
    with pytest.raises(AdapterError, match="directory does not exist"):
        load_model(ref, source=str(tmp_path / "missing"), **option)


# -- offline without the weights: one fast, clear message for every family ------------------
OFFLINE_CASES = [
    ("lingshu-7b", {}),            # qwen2_5_vl
    ("medvlm-r1-2b", {}),          # qwen2_vl
    ("llava-1.5-7b", {}),          # llava
    ("medgemma-4b", {}),           # gemma3
    ("hulu-med-7b", {"trust_remote_code": True}),  # hulumed
    ("pubmedclip", {}),            # hf_clip
    ("resnet18", {}),              # timm
    ("clip-vit-l-14-336", {}),     # open_clip
]


@pytest.mark.parametrize("ref, options", OFFLINE_CASES)
def test_offline_without_weights_fails_fast_and_clearly(ref, options, monkeypatch, empty_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(AdapterError) as err:
        load_model(ref, **options)
    elapsed = time.perf_counter() - start
    message = str(err.value)
    assert "HF_HUB_OFFLINE=1" in message and str(empty_cache) in message, message
    assert "--source DIR" in message or "--weights" in message, message
    assert elapsed < 5, f"{ref}: {elapsed:.1f} s"


@pytest.mark.parametrize("ref, options", OFFLINE_CASES)
def test_unreachable_hub_fails_fast_without_retries(ref, options, monkeypatch, empty_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port on loopback: nothing listens
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    start = time.perf_counter()
    with pytest.raises(AdapterError) as err:
        load_model(ref, **options)
    elapsed = time.perf_counter() - start
    message = str(err.value)
    assert "hub is unreachable (127.0.0.1:9" in message and "HF_HUB_OFFLINE=1" in message, message
    assert str(empty_cache) in message
    assert elapsed < 5, f"{ref}: {elapsed:.1f} s"


def test_cached_checkpoint_loads_offline_without_network(monkeypatch, empty_cache):
    from huggingface_hub import constants  # noqa: F401  (the cache folder is patched by the fixture)

    card = get_card("llava-1.5-7b")
    snapshot = empty_cache / "models--llava-hf--llava-1.5-7b-hf" / "snapshots" / ("b" * 40)
    get_adapter("llava").save_tiny_checkpoint(card, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("b" * 40)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src = loading.pretrained_source(card, None, revision="main", dtype="fp32", device="cpu")
    assert src.kwargs["local_files_only"] is True  # cached + unreachable: read the cache, no retries
    loaded = load_model("llava-1.5-7b", revision="main")
    assert loaded.weights == "hub:llava-hf/llava-1.5-7b-hf@main"


def _main(argv: list[str], capsys) -> tuple[int, str]:
    from medprobe.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_.value.code), captured.err


def test_cli_prints_one_line(monkeypatch, empty_cache, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = ["--dataset", "synthetic:lesions?n=6&size=32", "--store", str(tmp_path), "--device", "cpu"]
    code, err = _main(["extract", "--model", "Qwen/Qwen2.5-VL-7B-Instruct", *data], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: card 'qwen2.5-vl-7b'"), err
    assert "HF_HUB_OFFLINE=1" in lines[0] and "--source DIR" in lines[0] and str(empty_cache) in lines[0]
    code, err = _main(["extract", "--model", "lingshu-7b", "--source", "/missing", *data], capsys)
    assert code == 2 and "source '/missing': the directory does not exist" in err


def test_showing_a_card_by_hub_id_stays_light():
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\nfrom medprobe.cli import main\n"
        "try:\n    main(['models', 'show', 'lingshu-medical-mllm/LINGSHU-7B'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "lingshu-7b" in out.stdout and json.loads(out.stdout.strip().splitlines()[-1]) == []
