"""Original LLaVA-code checkpoints <-> stock llava-hf checkpoints (``LlavaForConditionalGeneration``).

LLaVA-Med v1.5 (``llava_mistral``) and the original HuatuoGPT-Vision releases (``llava_qwen2``,
``llava_llama``) were saved by the authors' LLaVA code, whose ``model_type`` transformers' Auto
classes reject. :func:`convert_llava_original` rewrites such a checkpoint directory as a stock
llava-hf checkpoint for the installed transformers; :func:`llava_hf_to_original` does the reverse
(used to test that the mapping is lossless: llava-hf -> original -> llava-hf gives back the same
tensors and the same outputs).

Input (``SRC``): ``config.json`` with ``model_type`` ``llava_mistral`` / ``llava_qwen2`` /
``llava_llama`` (or ``llava`` with ``mm_*`` fields: liuhaotian's LLaVA-1.5), the text model's fields
and the ``mm_*`` fields; weights as ``model.safetensors`` or shards listed in
``model.safetensors.index.json`` (``pytorch_model*.bin`` is read with ``weights_only=True``);
tokenizer files.

Weight names (original -> in-memory llava-hf; every original key must match one rule and every
llava-hf parameter must be filled, else :class:`ConversionError` names the keys):

=====================================================  ==============================================
original                                               llava-hf (transformers 5.x)
=====================================================  ==============================================
``model.vision_tower.vision_tower.vision_model.X``     ``model.vision_tower.X`` (>= 5.6; 4.52-5.5:
                                                       ``model.vision_tower.vision_model.X``)
``model.mm_projector.0.{weight,bias}``                 ``model.multi_modal_projector.linear_1.*``
``model.mm_projector.2.{weight,bias}``                 ``model.multi_modal_projector.linear_2.*``
``model.embed_tokens.*`` / ``model.layers.N.*`` /      ``model.language_model.embed_tokens.*`` /
``model.norm.*``                                       ``…layers.N.*`` / ``…norm.*``
``lm_head.weight``                                     ``lm_head.weight``
=====================================================  ==============================================

Non-persistent buffers that old checkpoints sometimes carry (``rotary_emb.inv_freq``,
``embeddings.position_ids``) are recomputed by the model and dropped (listed in the record).

Config: a :class:`~transformers.LlavaConfig` whose text config is ``MistralConfig`` /
``Qwen2Config`` / ``LlamaConfig`` (per ``model_type``) built from the text fields, whose vision
config is a ``CLIPVisionConfig`` read from the vision tower's ``config.json`` (``--vision-tower``
directory, or ``mm_vision_tower`` when it is a local directory, absolute or relative to ``SRC``)
or from a table of known towers, and checked against the tower weights' shapes (hidden size,
MLP width, depth, patch and image size). ``vision_feature_layer = mm_vision_select_layer``;
``mm_vision_select_feature`` ``patch`` -> strategy ``"default"`` (CLS dropped), ``cls_patch`` ->
``"full"``; ``image_seq_length`` = (image / patch)^2 (+1 for ``"full"``). Only the ``mlp2x_gelu``
projector, flat patch merging and no ``<im_start>``/``<im_end>`` wrapping map onto the stock class;
anything else is refused.

Tokens: the original code marks the image with ``IMAGE_TOKEN_INDEX = -200`` and needs no token;
the stock class needs one. ``<image>`` is added as a special token (and ``<pad>`` when the
tokenizer has no pad token, as transformers' own converter does); its id is
``image_token_index``. When a new id lies beyond the embedding matrix, ``embed_tokens`` and
``lm_head`` grow to ``len(tokenizer)`` rows and **every new row is the mean of the existing rows**
(deterministic; the ``<image>`` row is never read as an input, since image features replace it).
A tokenizer that already holds ``<image>`` keeps its id and nothing is resized.

Processor: a :class:`~transformers.LlavaProcessor` with the tokenizer and an image processor built
from ``preprocessor_config.json`` (``SRC``, else the vision tower directory, else CLIP defaults at
the tower's image size): ``image_aspect_ratio == "pad"`` (pad to a square with the mean colour,
LLaVA's ``expand2square``) -> ``LlavaImageProcessor(do_pad=True)``, otherwise
``CLIPImageProcessor``. ``DST`` also gets ``medprobe_conversion.json``: what was mapped, dropped,
added and read from where.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from medprobe.registry import MedprobeError

#: original ``model_type`` -> text ``model_type`` of the llava-hf text config
ORIGINAL_TEXT_TYPES = {"llava_mistral": "mistral", "llava_qwen2": "qwen2", "llava_llama": "llama", "llava": "llama"}
#: text ``model_type`` -> (original ``model_type``, original ``architectures`` entry) written by the reverse mapping
ORIGINAL_NAMES = {
    "mistral": ("llava_mistral", "LlavaMistralForCausalLM"),
    "qwen2": ("llava_qwen2", "LlavaQwen2ForCausalLM"),
    "llama": ("llava_llama", "LlavaLlamaForCausalLM"),
}
#: ``mm_vision_select_feature`` -> ``vision_feature_select_strategy``
SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}
PROJECTOR_TYPE = "mlp2x_gelu"
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
#: where the reverse mapping stores the CLIP config / preprocessor of the tower (``mm_vision_tower``)
VISION_TOWER_DIR = "vision_tower"
RECORD = "medprobe_conversion.json"

ORIGINAL_VISION = "model.vision_tower.vision_tower.vision_model."
HF_VISION_FLAT = "model.vision_tower."  # transformers >= 5.6
HF_VISION_NESTED = "model.vision_tower.vision_model."  # 4.52 - 5.5
#: (original prefix, llava-hf prefix); the vision row's llava-hf prefix is resolved per version
KEY_RULES: tuple[tuple[str, str], ...] = (
    (ORIGINAL_VISION, HF_VISION_FLAT),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
#: non-persistent buffers some original checkpoints carry; recomputed by the model, so dropped
DROPPED_BUFFERS = re.compile(r"(^|\.)rotary_emb\.inv_freq$|(^|\.)embeddings\.position_ids$")
EMBED = "model.language_model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"

#: original ``config.json`` fields that describe the multimodal parts (read here, not text fields)
MM_FIELDS = (
    "mm_vision_tower", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature",
    "image_aspect_ratio", "mm_use_im_start_end", "mm_use_im_patch_token", "mm_patch_merge_type",
    "image_grid_pinpoints", "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter", "unfreeze_mm_vision_tower", "mm_projector_lr", "mm_vision_tower_lr", "use_mm_proj",
    "mm_resampler_type", "mm_mask_drop_mode",
)
#: legacy text fields accepted by the 5.x text config classes (converted to ``rope_parameters``)
LEGACY_TEXT_FIELDS = ("rope_theta", "rope_scaling")
#: bookkeeping fields of a config.json that are not model facts
CONFIG_BOOKKEEPING = ("architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype")

#: CLIP towers LLaVA-style checkpoints name in ``mm_vision_tower`` (OpenAI CLIP configs); keyed by
#: the last path component, lower-cased, ``_`` as ``-``. Used only when no tower config.json is at hand,
#: and only when the weights' shapes agree.
KNOWN_TOWERS: dict[str, dict[str, Any]] = {
    "clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
        image_size=336, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
    "clip-vit-large-patch14": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
        image_size=224, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    ),
}
#: image-processor fields taken over from a ``preprocessor_config.json``
IMAGE_PROCESSOR_FIELDS = (
    "size", "crop_size", "image_mean", "image_std", "resample", "do_resize", "do_center_crop", "do_rescale",
    "rescale_factor", "do_normalize", "do_convert_rgb",
)


class ConversionError(MedprobeError):
    """A checkpoint cannot be converted; the message names the file, field or keys."""


@dataclass
class ConversionResult:
    """Where the converted checkpoint is and what was done (the content of ``medprobe_conversion.json``)."""

    path: Path
    record: dict[str, Any]


# -- reading checkpoints -----------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`ConversionError` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: cannot read JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return data


def is_original_config(raw: Mapping[str, Any]) -> bool:
    """True for an original LLaVA-code ``config.json`` (``llava_*`` model types, or ``llava`` with ``mm_*`` fields)."""
    model_type = raw.get("model_type")
    if model_type in ("llava_mistral", "llava_qwen2", "llava_llama"):
        return True
    return model_type == "llava" and "mm_vision_tower" in raw and "text_config" not in raw


def read_state_dict(directory: Path) -> tuple[dict[str, Any], list[str]]:
    """All tensors of a checkpoint directory as ``{name: tensor}`` plus the files read.

    Reads ``model.safetensors``, the shards of ``model.safetensors.index.json``, or (when no
    safetensors exist) ``pytorch_model.bin`` / its index with ``torch.load(weights_only=True)``.
    A name found in two shards raises.
    """
    import torch
    from safetensors.torch import load_file

    files: list[Path]
    loader: Any
    if (directory / "model.safetensors.index.json").is_file():
        files = _index_files(directory / "model.safetensors.index.json")
        loader = load_file
    elif (directory / "model.safetensors").is_file():
        files, loader = [directory / "model.safetensors"], load_file
    elif (directory / "pytorch_model.bin.index.json").is_file():
        files = _index_files(directory / "pytorch_model.bin.index.json")
        loader = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    elif (directory / "pytorch_model.bin").is_file():
        files = [directory / "pytorch_model.bin"]
        loader = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    else:
        raise ConversionError(
            f"{directory}: no weights (expected model.safetensors, model.safetensors.index.json, "
            "pytorch_model.bin or pytorch_model.bin.index.json)"
        )
    tensors: dict[str, Any] = {}
    for path in files:
        if not path.is_file():
            raise ConversionError(f"{path}: weight shard listed in the index is missing")
        try:
            part = loader(str(path))
        except Exception as exc:
            raise ConversionError(f"{path}: cannot read weights: {type(exc).__name__}: {exc}") from None
        twice = sorted(set(part) & set(tensors))
        if twice:
            raise ConversionError(f"{path}: tensor(s) {twice[:5]} also appear in an earlier shard")
        tensors.update(part)
    return tensors, [p.name for p in files]


def _index_files(index: Path) -> list[Path]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConversionError(f"{index}: no 'weight_map'")
    return [index.parent / name for name in dict.fromkeys(weight_map.values())]


# -- key mapping -------------------------------------------------------------------------------
def key_rules(hf_vision_prefix: str = HF_VISION_FLAT) -> tuple[tuple[str, str], ...]:
    """:data:`KEY_RULES` with the vision tower's llava-hf prefix of the installed transformers."""
    return tuple((o, hf_vision_prefix if o == ORIGINAL_VISION else h) for o, h in KEY_RULES)


def hf_vision_prefix(hf_keys: Iterable[str]) -> str:
    """``model.vision_tower.vision_model.`` when the model nests the CLIP tower (transformers < 5.6),
    else ``model.vision_tower.``."""
    return HF_VISION_NESTED if any(k.startswith(HF_VISION_NESTED) for k in hf_keys) else HF_VISION_FLAT


def rename(key: str, rules: Iterable[tuple[str, str]], reverse: bool = False) -> str | None:
    """``key`` renamed by the first rule whose source prefix it starts with (original -> llava-hf,
    or llava-hf -> original with ``reverse``); ``None`` when no rule applies."""
    for original, hf in rules:
        src, dst = (hf, original) if reverse else (original, hf)
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def map_keys(
    tensors: Mapping[str, Any],
    rules: Iterable[tuple[str, str]],
    expected: Iterable[str],
    *,
    reverse: bool = False,
    where: str,
) -> tuple[dict[str, Any], list[str]]:
    """Rename every tensor; returns ``(renamed, dropped buffers)``.

    Raises :class:`ConversionError` naming (a) keys no rule maps ("left over"), (b) keys two
    source names map onto, and (c) ``expected`` keys nothing maps onto ("missing").
    """
    rules = tuple(rules)
    out: dict[str, Any] = {}
    left_over: list[str] = []
    dropped: list[str] = []
    clashes: list[str] = []
    for key, value in tensors.items():
        if DROPPED_BUFFERS.search(key):
            dropped.append(key)
            continue
        new = rename(key, rules, reverse=reverse)
        if new is None:
            left_over.append(key)
        elif new in out:
            clashes.append(new)
        else:
            out[new] = value
    expected = set(expected)
    missing = sorted(expected - set(out))
    extra = sorted(set(out) - expected)
    problems = []
    if left_over:
        problems.append(f"{len(left_over)} key(s) match no mapping rule: {_some(left_over)}")
    if clashes:
        problems.append(f"{len(clashes)} target key(s) mapped twice: {_some(clashes)}")
    if extra:
        problems.append(f"{len(extra)} mapped key(s) the target model does not have: {_some(extra)}")
    if missing:
        problems.append(f"{len(missing)} target key(s) not provided: {_some(missing)}")
    if problems:
        raise ConversionError(f"{where}: " + "; ".join(problems))
    return out, sorted(dropped)


def _some(keys: Iterable[str], n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


# -- configs -----------------------------------------------------------------------------------
def text_config_from_original(raw: Mapping[str, Any], where: str) -> tuple[Any, list[str]]:
    """The llava-hf text config of an original ``config.json`` and the fields it did not carry.

    Carried: the fields the text config class knows (its ``to_dict()`` keys) plus ``rope_theta``
    / ``rope_scaling``; dropped: everything else except the ``mm_*`` fields and bookkeeping.
    """
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    classes = {"mistral": MistralConfig, "qwen2": Qwen2Config, "llama": LlamaConfig}
    text_type = ORIGINAL_TEXT_TYPES.get(raw.get("model_type", ""))
    if text_type is None:
        raise ConversionError(
            f"{where}: model_type {raw.get('model_type')!r} is not an original LLaVA-code type "
            f"({sorted(ORIGINAL_TEXT_TYPES)})"
        )
    cls = classes[text_type]
    known = set(cls().to_dict()) | set(LEGACY_TEXT_FIELDS)
    skip = set(MM_FIELDS) | set(CONFIG_BOOKKEEPING)
    carried = {k: v for k, v in raw.items() if k in known and k not in skip}
    if carried.get("rope_scaling") is None:
        carried.pop("rope_scaling", None)  # null in most originals; the 5.x classes warn on the legacy field
    dropped = sorted(k for k in raw if k not in known and k not in skip)
    if "rope_parameters" in carried and "rope_theta" in carried:
        carried.pop("rope_theta")  # rope_parameters holds it (written by llava_hf_to_original for both worlds)
    try:
        return cls(**carried), dropped
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{where}: the text fields do not make a {cls.__name__}: {exc}") from None


def tower_shapes(tensors: Mapping[str, Any], prefix: str, where: str) -> dict[str, int]:
    """CLIP vision facts read from the tower weights under ``prefix``: ``hidden_size``,
    ``intermediate_size``, ``num_hidden_layers``, ``patch_size``, ``num_channels``, ``image_size``."""
    patch = tensors.get(prefix + "embeddings.patch_embedding.weight")
    positions = tensors.get(prefix + "embeddings.position_embedding.weight")
    if patch is None or positions is None:
        raise ConversionError(
            f"{where}: the vision tower weights ({prefix}embeddings.*) are missing; pass the CLIP tower "
            f"checkpoint directory with --vision-tower DIR (e.g. a local copy of openai/clip-vit-large-patch14-336)"
        )
    layer_ids = {
        int(m.group(1)) for k in tensors if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))
    }
    fc1 = tensors.get(prefix + "encoder.layers.0.mlp.fc1.weight")
    if not layer_ids or fc1 is None:
        raise ConversionError(f"{where}: no vision encoder layers under {prefix}encoder.layers")
    if layer_ids != set(range(max(layer_ids) + 1)):
        raise ConversionError(f"{where}: vision encoder layers {sorted(layer_ids)} are not 0..{max(layer_ids)}")
    hidden, channels, p, p2 = patch.shape
    grid = math.isqrt(positions.shape[0] - 1)
    if p != p2 or grid * grid != positions.shape[0] - 1:
        raise ConversionError(
            f"{where}: vision tower shapes (patch {tuple(patch.shape)}, positions {tuple(positions.shape)}) "
            "are not a square CLIP patch grid plus CLS"
        )
    return dict(
        hidden_size=int(hidden), intermediate_size=int(fc1.shape[0]), num_hidden_layers=max(layer_ids) + 1,
        patch_size=int(p), num_channels=int(channels), image_size=int(grid * p),
    )


def tower_directory(raw: Mapping[str, Any], src: Path, vision_tower: Path | None) -> Path | None:
    """The local directory describing the vision tower: ``vision_tower`` if given, else
    ``mm_vision_tower`` when it names a directory (absolute or relative to ``src``)."""
    if vision_tower is not None:
        return vision_tower
    name = raw.get("mm_vision_tower")
    if not isinstance(name, str) or not name:
        return None
    for candidate in (Path(name).expanduser(), src / name):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def vision_config_for(
    raw: Mapping[str, Any], shapes: Mapping[str, int], tower_dir: Path | None, where: str
) -> tuple[Any, str]:
    """The ``CLIPVisionConfig`` of the tower and where its fields came from.

    Sources, first found wins: ``tower_dir/config.json`` (a CLIP or CLIP-vision config), the
    :data:`KNOWN_TOWERS` entry of ``mm_vision_tower``. Every shape-derived field must agree with
    ``shapes``; a tower without either source raises (attention heads cannot be read from shapes).
    """
    from transformers import CLIPVisionConfig

    name = str(raw.get("mm_vision_tower") or "")
    if tower_dir is not None and (tower_dir / "config.json").is_file():
        try:
            config = CLIPVisionConfig.from_pretrained(str(tower_dir), local_files_only=True)
        except Exception as exc:
            raise ConversionError(f"{tower_dir / 'config.json'}: not a CLIP vision config: {exc}") from None
        source = str(tower_dir / "config.json")
    else:
        key = Path(name.rstrip("/")).name.lower().replace("_", "-")
        if key not in KNOWN_TOWERS:
            raise ConversionError(
                f"{where}: cannot tell the vision tower's configuration: mm_vision_tower {name!r} is neither a local "
                f"directory with a config.json nor a known tower ({sorted(KNOWN_TOWERS)}); pass --vision-tower DIR"
            )
        config = CLIPVisionConfig(**KNOWN_TOWERS[key])
        source = f"medprobe_llava.convert.KNOWN_TOWERS[{key!r}]"
    wrong = {k: (getattr(config, k), v) for k, v in shapes.items() if getattr(config, k, None) != v}
    if wrong:
        detail = ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in wrong.items())
        raise ConversionError(f"{where}: vision config from {source} disagrees with the tower weights ({detail})")
    if config.hidden_size % config.num_attention_heads:
        raise ConversionError(f"{source}: hidden_size {config.hidden_size} is not divisible by num_attention_heads")
    return config, source


def mm_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check the ``mm_*`` fields map onto the stock class; returns feature layer, strategy, pad flag."""
    projector = raw.get("mm_projector_type", "linear")
    if projector != PROJECTOR_TYPE:
        raise ConversionError(
            f"{where}: mm_projector_type {projector!r} cannot be expressed by LlavaForConditionalGeneration "
            f"(its projector is Linear-GELU-Linear = {PROJECTOR_TYPE!r})"
        )
    feature = raw.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURE:
        raise ConversionError(f"{where}: mm_vision_select_feature {feature!r} is not one of {sorted(SELECT_FEATURE)}")
    layer = raw.get("mm_vision_select_layer", -2)
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ConversionError(f"{where}: mm_vision_select_layer must be an integer, got {layer!r}")
    if raw.get("mm_use_im_start_end"):
        raise ConversionError(
            f"{where}: mm_use_im_start_end is true (image features wrapped in <im_start>/<im_end>); the stock class "
            "has no such wrapping"
        )
    merge = raw.get("mm_patch_merge_type", "flat")
    if merge not in (None, "flat"):
        raise ConversionError(f"{where}: mm_patch_merge_type {merge!r} (LLaVA-NeXT tiling) is not the flat LLaVA layout")
    aspect = raw.get("image_aspect_ratio")
    if isinstance(aspect, str) and aspect.startswith("anyres"):
        raise ConversionError(f"{where}: image_aspect_ratio {aspect!r} (LLaVA-NeXT tiling) is not supported")
    return {"vision_feature_layer": layer, "strategy": SELECT_FEATURE[feature], "pad": aspect == "pad"}


def image_processor_for(
    src: Path, tower_dir: Path | None, image_size: int, pad: bool, where: str
) -> tuple[Any, str]:
    """The image processor (``LlavaImageProcessor(do_pad=True)`` for pad, else ``CLIPImageProcessor``)
    and where its settings came from (see the module docstring)."""
    from transformers import CLIPImageProcessor, LlavaImageProcessor

    settings: dict[str, Any] = {}
    source = "CLIP defaults"
    for directory in (src, tower_dir):
        if directory is not None and (directory / "preprocessor_config.json").is_file():
            data = read_json(directory / "preprocessor_config.json")
            settings = {k: data[k] for k in IMAGE_PROCESSOR_FIELDS if k in data}
            source = str(directory / "preprocessor_config.json")
            break
    if not settings:
        settings = {"size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size}}
    cls = LlavaImageProcessor if pad else CLIPImageProcessor
    try:
        processor = cls(**settings, do_pad=True) if pad else cls(**settings)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"{source}: cannot build {cls.__name__}: {exc}") from None
    crop = processor.to_dict().get("crop_size") or {}
    if processor.to_dict().get("do_center_crop") and (crop.get("height"), crop.get("width")) != (image_size, image_size):
        raise ConversionError(
            f"{where}: the image processor ({source}) crops to {crop}, but the vision tower takes {image_size} px"
        )
    return processor, source


# -- tokens ------------------------------------------------------------------------------------
def add_tokens(tokenizer: Any) -> list[dict[str, Any]]:
    """Add ``<image>`` (and ``<pad>`` when there is no pad token) as special tokens; returns
    ``[{"token", "id", "added"}]`` for both."""
    out = []
    if IMAGE_TOKEN in tokenizer.get_vocab():
        out.append({"token": IMAGE_TOKEN, "id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), "added": False})
    else:
        tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
        out.append({"token": IMAGE_TOKEN, "id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), "added": True})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        out.append({"token": PAD_TOKEN, "id": tokenizer.pad_token_id, "added": True})
    return out


def grow_rows(weight: Any, rows: int) -> Any:
    """``weight`` (V, H) extended to (rows, H); each new row is the mean of the V existing rows
    (computed in float32, stored in the weight's dtype)."""
    import torch

    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)], dim=0)


# -- original -> llava-hf ----------------------------------------------------------------------
def convert_llava_original(
    src: str | Path,
    dst: str | Path,
    *,
    vision_tower: str | Path | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """Convert the original LLaVA-code checkpoint ``src`` into a stock llava-hf checkpoint ``dst``.

    Args:
        src: the original checkpoint directory (config.json, weights, tokenizer files).
        dst: the output directory; must not exist, be empty, or (with ``overwrite``) hold an earlier
            conversion (``medprobe_conversion.json``).
        vision_tower: a local CLIP checkpoint directory supplying the tower's config (and its weights
            when ``src`` has none, e.g. a local copy of ``openai/clip-vit-large-patch14-336``).
        dtype: cast floating tensors (``fp32`` / ``bf16`` / ``fp16``); default keeps the stored dtype.

    The output is written to a temporary sibling directory and renamed into place when complete.
    """
    import torch
    import transformers
    from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedConfig

    from medprobe.runtime import resolve_dtype, torch_dtype

    src = Path(src).expanduser().resolve()
    dst = Path(dst).expanduser().resolve()
    if not (src / "config.json").is_file():
        raise ConversionError(f"{src}: no config.json (expected an original LLaVA-code checkpoint directory)")
    where = str(src / "config.json")
    raw = read_json(src / "config.json")
    if not is_original_config(raw):
        raise ConversionError(
            f"{where}: model_type {raw.get('model_type')!r} is not an original LLaVA-code checkpoint "
            f"(expected one of {sorted(k for k in ORIGINAL_TEXT_TYPES if k != 'llava')}, or 'llava' with mm_* fields)"
        )
    _check_destination(dst, overwrite)
    settings = mm_settings(raw, where)
    text_config, dropped_fields = text_config_from_original(raw, where)

    tensors, files = read_state_dict(src)
    tower = Path(vision_tower).expanduser().resolve() if vision_tower is not None else None
    tower_source = "checkpoint"
    if tower is not None:
        if not tower.is_dir():
            raise ConversionError(f"{tower}: --vision-tower must be a local CLIP checkpoint directory")
        if not any(k.startswith(ORIGINAL_VISION) for k in tensors):
            tensors.update(_tower_tensors(tower))
            tower_source = str(tower)
        # else: the checkpoint's own tower weights win; the directory only supplies the config
    shapes = tower_shapes(tensors, ORIGINAL_VISION, f"{src} (weights)")
    vision_config, vision_source = vision_config_for(raw, shapes, tower_directory(raw, src, tower), where)
    _check_projector(tensors, raw, vision_config, text_config, where)

    try:
        # config=: a blank config, so the tokenizer files alone decide the class, which is what
        # AutoTokenizer falls back to after failing (noisily) to parse the llava_* config.json
        tokenizer = AutoTokenizer.from_pretrained(str(src), config=PreTrainedConfig(), local_files_only=True)
    except Exception as exc:
        raise ConversionError(f"{src}: cannot load the tokenizer files: {type(exc).__name__}: {exc}") from None
    tokens = add_tokens(tokenizer)
    image_token_id = tokens[0]["id"]

    tied = bool(raw.get("tie_word_embeddings", False))
    embed = tensors.get("model.embed_tokens.weight")
    rows = max(int(embed.shape[0]), len(tokenizer)) if embed is not None else len(tokenizer)
    text_config.vocab_size = rows
    text_config.tie_word_embeddings = tied
    if tokenizer.pad_token_id is not None:
        text_config.pad_token_id = tokenizer.pad_token_id
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        vision_feature_layer=settings["vision_feature_layer"],
        vision_feature_select_strategy=settings["strategy"],
        image_seq_length=patches if settings["strategy"] == "default" else patches + 1,
        projector_hidden_act="gelu",
        multimodal_projector_bias="model.mm_projector.0.bias" in tensors,
        tie_word_embeddings=tied,
    )

    with torch.device("meta"):
        skeleton = LlavaForConditionalGeneration(config)
    expected = set(skeleton.state_dict())
    if tied:  # one matrix: the original's lm_head.weight, if stored at all, is the embedding
        expected.discard(LM_HEAD)
        tensors.pop("lm_head.weight", None)
    mapped, dropped_buffers = map_keys(
        tensors, key_rules(hf_vision_prefix(expected)), expected, where=f"{src} (weights)"
    )
    old_rows = int(mapped[EMBED].shape[0])
    mapped[EMBED] = grow_rows(mapped[EMBED], rows)
    if not tied:
        if int(mapped[LM_HEAD].shape[0]) != old_rows:
            raise ConversionError(
                f"{src} (weights): lm_head.weight has {mapped[LM_HEAD].shape[0]} rows but model.embed_tokens.weight {old_rows}"
            )
        mapped[LM_HEAD] = grow_rows(mapped[LM_HEAD], rows)
    if dtype is not None:
        target = torch_dtype(resolve_dtype(dtype))
        mapped = {k: v.to(target) if v.is_floating_point() else v for k, v in mapped.items()}
    stored = mapped[EMBED].dtype
    config.dtype = stored
    config.text_config.dtype = stored
    config.vision_config.dtype = stored
    loadable = dict(mapped, **{LM_HEAD: mapped[EMBED]}) if tied else mapped
    skeleton.load_state_dict(loadable, strict=True, assign=True)
    if tied:
        skeleton.tie_weights()

    image_processor, processor_source = image_processor_for(
        src, tower_directory(raw, src, tower), vision_config.image_size, settings["pad"], where
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=settings["strategy"],
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )
    record = {
        "format": "medprobe.conversion/1",
        "direction": "llava-original -> llava-hf",
        "source": str(src),
        "source_model_type": raw.get("model_type"),
        "source_architectures": raw.get("architectures"),
        "source_weight_files": files,
        "target_class": "LlavaForConditionalGeneration",
        "transformers": transformers.__version__,
        "text_model_type": config.text_config.model_type,
        "tensors_mapped": len(mapped),
        "key_rules": [list(r) for r in key_rules(hf_vision_prefix(expected))],
        "dropped_buffers": dropped_buffers,
        "dropped_config_fields": dropped_fields,
        "vision_config_source": vision_source,
        "vision_tower_weights": tower_source,
        "vision_feature_layer": settings["vision_feature_layer"],
        "vision_feature_select_strategy": settings["strategy"],
        "image_aspect_ratio": raw.get("image_aspect_ratio"),
        "image_processor": type(image_processor).__name__,
        "image_processor_source": processor_source,
        "image_token_index": image_token_id,
        "image_seq_length": config.image_seq_length,
        "tokens": tokens,
        "vocab_rows": {"before": old_rows, "after": rows, "new_rows": "mean of the existing rows"},
        "dtype": str(stored).replace("torch.", ""),
    }
    with _staging(dst, overwrite) as tmp:
        skeleton.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ConversionResult(dst, record)


def _tower_tensors(tower: Path) -> dict[str, Any]:
    """The CLIP vision weights of a local CLIP / CLIP-vision checkpoint, named as in an original
    LLaVA checkpoint (``model.vision_tower.vision_tower.vision_model.*``). Text-side tensors of a
    full CLIP checkpoint are ignored."""
    tensors, _ = read_state_dict(tower)
    out = {}
    for key, value in tensors.items():
        if key.startswith(("text_model.", "text_projection.", "visual_projection.", "logit_scale")):
            continue
        name = key[len("vision_model."):] if key.startswith("vision_model.") else key
        out[ORIGINAL_VISION + name] = value
    if not out:
        raise ConversionError(f"{tower}: no vision tower tensors found")
    return out


def _check_projector(tensors: Mapping[str, Any], raw: Mapping[str, Any], vision: Any, text: Any, where: str) -> None:
    first = tensors.get("model.mm_projector.0.weight")
    second = tensors.get("model.mm_projector.2.weight")
    if first is None or second is None:
        raise ConversionError(f"{where}: the checkpoint has no model.mm_projector.0/.2 weights ({PROJECTOR_TYPE})")
    width = vision.hidden_size
    mm_hidden = raw.get("mm_hidden_size", width)
    if mm_hidden != width or first.shape[1] != width:
        raise ConversionError(
            f"{where}: projector input {first.shape[1]} / mm_hidden_size {mm_hidden} differ from the vision width {width}"
        )
    if first.shape[0] != text.hidden_size or tuple(second.shape) != (text.hidden_size, text.hidden_size):
        raise ConversionError(
            f"{where}: projector shapes {tuple(first.shape)}, {tuple(second.shape)} do not end in the text hidden size "
            f"{text.hidden_size}"
        )


# -- llava-hf -> original ----------------------------------------------------------------------
def llava_hf_to_original(
    src: str | Path,
    dst: str | Path,
    *,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the llava-hf checkpoint ``src`` in the original LLaVA-code layout (the reverse of
    :func:`convert_llava_original`).

    ``dst`` gets ``config.json`` (``model_type`` ``llava_<text type>``, the text fields, the ``mm_*``
    fields, ``mm_vision_tower = "./vision_tower"``), the weights under their original names
    (``model.safetensors``, or shards of at most ``max_shard_bytes`` with
    ``model.safetensors.index.json``), the tokenizer files (``<image>`` stays in the vocabulary, so
    converting back resizes nothing), and ``vision_tower/`` holding the CLIP vision config and the
    image processor's ``preprocessor_config.json``.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    src = Path(src).expanduser().resolve()
    dst = Path(dst).expanduser().resolve()
    _check_destination(dst, overwrite)
    raw = read_json(src / "config.json")
    if raw.get("model_type") != "llava":
        raise ConversionError(f"{src / 'config.json'}: model_type {raw.get('model_type')!r} is not a llava-hf checkpoint")
    try:
        model = LlavaForConditionalGeneration.from_pretrained(str(src), local_files_only=True)
        processor = AutoProcessor.from_pretrained(str(src), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{src}: cannot load the llava-hf checkpoint: {exc}") from None
    config = model.config
    where = str(src / "config.json")
    text_type = config.text_config.model_type
    if text_type not in ORIGINAL_NAMES:
        raise ConversionError(f"{where}: text model_type {text_type!r} has no original LLaVA class ({sorted(ORIGINAL_NAMES)})")
    if config.projector_hidden_act != "gelu" or not getattr(config, "multimodal_projector_bias", True):
        raise ConversionError(f"{where}: the projector is not the original mlp2x_gelu (Linear+bias, GELU, Linear+bias)")
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ConversionError(f"{where}: vision_feature_layer {layer!r} (a list) has no original equivalent")
    feature = {v: k for k, v in SELECT_FEATURE.items()}.get(config.vision_feature_select_strategy)
    if feature is None:
        raise ConversionError(f"{where}: vision_feature_select_strategy {config.vision_feature_select_strategy!r}")

    state = model.state_dict()
    tied = bool(config.text_config.tie_word_embeddings)
    if tied:
        state.pop(LM_HEAD, None)
    rules = key_rules(hf_vision_prefix(state))
    # every llava-hf tensor must have an original name (map_keys reports the ones that do not)
    expected = {name for name in (rename(k, rules, reverse=True) for k in state) if name is not None}
    renamed, _ = map_keys(state, rules, expected, reverse=True, where=f"{src} (weights)")

    text = config.text_config.to_dict()
    for key in CONFIG_BOOKKEEPING:
        text.pop(key, None)
    rope = text.get("rope_parameters") or {}
    if isinstance(rope, dict) and "rope_theta" in rope:
        text["rope_theta"] = rope["rope_theta"]  # the field original code reads
    original_type, architecture = ORIGINAL_NAMES[text_type]
    image_processor = processor.image_processor
    pad = bool(getattr(image_processor, "do_pad", False))
    out = {
        **text,
        "architectures": [architecture],
        "model_type": original_type,
        "dtype": str(next(iter(renamed.values())).dtype).replace("torch.", ""),
        "tie_word_embeddings": tied,
        "mm_vision_tower": f"./{VISION_TOWER_DIR}",
        "mm_hidden_size": config.vision_config.hidden_size,
        "mm_projector_type": PROJECTOR_TYPE,
        "mm_vision_select_layer": layer,
        "mm_vision_select_feature": feature,
        "image_aspect_ratio": "pad" if pad else "square",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat",
        "tokenizer_padding_side": processor.tokenizer.padding_side,
    }
    with _staging(dst, overwrite) as tmp:
        _save_sharded(renamed, tmp, max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
        processor.tokenizer.save_pretrained(tmp)
        tower = tmp / VISION_TOWER_DIR
        tower.mkdir()
        config.vision_config.save_pretrained(tower)
        preprocessor = {k: v for k, v in image_processor.to_dict().items() if k in IMAGE_PROCESSOR_FIELDS}
        preprocessor["image_processor_type"] = "CLIPImageProcessor"
        (tower / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2, default=int) + "\n")
    return dst


def _save_sharded(tensors: dict[str, Any], out: Path, max_bytes: int | None) -> None:
    """``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` + index when ``max_bytes`` splits them."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    if max_bytes is None:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


# -- output directories ------------------------------------------------------------------------
def _check_destination(dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise ConversionError(f"{dst}: exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()):
        if not overwrite:
            raise ConversionError(f"{dst}: directory is not empty (pass --overwrite to replace an earlier conversion)")
        if not ((dst / RECORD).is_file() or (dst / "config.json").is_file()):
            raise ConversionError(f"{dst}: not a checkpoint directory written by medprobe convert; refusing to replace it")


class _staging:
    """Write into ``.<name>.partial-<pid>`` next to ``dst``; on success replace ``dst`` with it,
    on failure remove it (``dst`` is untouched until the new directory is complete)."""

    def __init__(self, dst: Path, overwrite: bool):
        self.dst = dst
        self.overwrite = overwrite
        self.tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}"

    def __enter__(self) -> Path:
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.dst.exists():
            _check_destination(self.dst, self.overwrite)
            shutil.rmtree(self.dst)
        os.replace(self.tmp, self.dst)
