"""Qwen2-VL and Qwen2.5-VL adapters (MedVLM-R1, Lingshu, HuatuoGPT-Vision-Qwen2.5VL, ShizhenGPT-VL).

Layer map (candidate paths, first match wins; module names of transformers 5.24.0
``models/qwen2_vl/modeling_qwen2_vl.py`` and ``models/qwen2_5_vl/modeling_qwen2_5_vl.py``, and of
4.51's, where the vision tower sat at ``visual``):

=========  ===================================  =========================  ==========
stage      transformers >= 4.52 (incl. 5.x)     <= 4.51                    layout
=========  ===================================  =========================  ==========
vision     ``model.visual.blocks.N``            ``visual.blocks.N``        packed
connector  ``model.visual.merger``              ``visual.merger``          packed
llm        ``model.language_model.layers.N``    ``model.layers.N``         NLC
=========  ===================================  =========================  ==========

Vision blocks see all images packed as (sum_i t_i*h_i*w_i, C_vis) in merge-unit order (Qwen2.5-VL:
also window order, per image); the merger gives (sum_i t_i*h_i*w_i / merge², C_llm). Per-image
counts come from ``image_grid_thw`` (``Batch.packed``). The merger is fed by the last block.

Inputs: images are resized to a fixed square ``image_size`` (card setting, default 448, a multiple
of patch*merge = 28) and the image processor is forced to ``min_pixels = max_pixels =
image_size²``, so every image gives (image_size/28)² LLM image tokens. ``mm_token_type_ids``
(0 text, 1 image, 2 video) is always passed: transformers 5.x Qwen2-VL raises without it and
Qwen2.5-VL silently falls back to 1-D positions.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from PIL import Image
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from transformers.image_utils import SizeDict

from medprobe.adapter import AdapterError, ImageTokens, LoadedModel
from medprobe.cards import ModelCard
from medprobe.models.hf.stock import StockMLLMAdapter
from medprobe.models.hf.tokenizer import build_word_tokenizer
from medprobe.layermap import LayerGroup

VISION_BLOCKS = ("model.visual.blocks", "visual.blocks")
MERGER = ("model.visual.merger", "visual.merger")
LLM_LAYERS = ("model.language_model.layers", "model.layers")

#: probing resolution when the card sets none (448 px -> 32x32 patches -> 256 LLM tokens)
DEFAULT_IMAGE_SIZE = 448
#: tiny models: 56 px -> 4x4 patches -> 16 packed vision tokens -> 4 LLM image tokens
TINY_IMAGE_SIZE = 56

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"

#: ChatML, as the Qwen-VL checkpoints use; an image item renders as vision_start, pad, vision_end
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _QwenVLAdapter(StockMLLMAdapter):
    """What Qwen2-VL and Qwen2.5-VL share; the subclasses add their config paths and classes."""

    load_options = ("image_size",)
    #: config paths of the vision block width and the merger output width
    vision_width: str = ""
    connector_width: str = ""
    processor_class: type = Qwen2VLProcessor

    # -- layer map -----------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        return (
            LayerGroup(
                "vision", "vision.{i:02d}", VISION_BLOCKS, count="vision_config.depth",
                layout="packed", width=self.vision_width, feeds_connector=-1,
            ),
            LayerGroup("connector", "connector", MERGER, repeated=False, layout="packed", width=self.connector_width),
            LayerGroup(
                "llm", "llm.{i:02d}", LLM_LAYERS, count="text_config.num_hidden_layers",
                layout="NLC", width="text_config.hidden_size",
            ),
        )

    # -- tiny model ----------------------------------------------------------------------------
    def tiny_processor(self, card: ModelCard) -> Any:
        tokenizer = build_word_tokenizer(
            special_tokens=("<|im_start|>", "<|im_end|>"),
            named_tokens={
                "image_token": IMAGE_PAD,
                "video_token": VIDEO_PAD,
                "vision_start_token": VISION_START,
                "vision_end_token": VISION_END,
            },
            chat_template=TINY_CHAT_TEMPLATE,
        )
        side = TINY_IMAGE_SIZE * TINY_IMAGE_SIZE
        image_processor = Qwen2VLImageProcessor(
            size={"shortest_edge": side, "longest_edge": side}, patch_size=14, merge_size=2, temporal_patch_size=2
        )
        return self.processor_class(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
            chat_template=TINY_CHAT_TEMPLATE,
        )

    def tiny_text_config(self, tokenizer: Any) -> dict[str, Any]:
        """4 layers x 48 wide, head_dim 12: M-RoPE sections (t, h, w) sum to head_dim / 2."""
        return {
            "vocab_size": len(tokenizer),
            "hidden_size": 48,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2]},
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }

    @staticmethod
    def token_ids(tokenizer: Any) -> dict[str, int]:
        ids = {
            "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_PAD),
            "video_token_id": tokenizer.convert_tokens_to_ids(VIDEO_PAD),
            "vision_start_token_id": tokenizer.convert_tokens_to_ids(VISION_START),
            "vision_end_token_id": tokenizer.convert_tokens_to_ids(VISION_END),
        }
        return ids

    # -- loading -------------------------------------------------------------------------------
    def processor_load_kwargs(self, card: ModelCard, options: Mapping[str, Any]) -> dict[str, Any]:
        side = _probe_size(card, options) ** 2
        return {"size": {"shortest_edge": side, "longest_edge": side}}

    def configure_processor(self, card: ModelCard, processor: Any, options: Mapping[str, Any]) -> Any:
        """Force min_pixels = max_pixels = image_size² on the loaded image processor: a
        checkpoint config holding ``min_pixels`` / ``max_pixels`` (as Qwen's do) overrides the
        ``size`` passed to ``from_pretrained``, and passing them at call time is deprecated."""
        side = _probe_size(card, options) ** 2
        ip = processor.image_processor
        ip.size = type(ip.size)(shortest_edge=side, longest_edge=side) if isinstance(ip.size, SizeDict) else {
            "shortest_edge": side, "longest_edge": side}
        for attr in ("min_pixels", "max_pixels"):
            if getattr(ip, attr, None) is not None:
                setattr(ip, attr, side)
        return processor

    def loaded_extra(self, card: ModelCard, model: Any, processor: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        size = dict(processor.image_processor.size)
        lo, hi = size.get("shortest_edge"), size.get("longest_edge")
        if not lo or lo != hi or math.isqrt(lo) ** 2 != lo:
            raise AdapterError(
                f"model '{card.id}': the image processor must fix the resolution (min_pixels = max_pixels = side²), "
                f"got shortest_edge={lo}, longest_edge={hi}"
            )
        side = math.isqrt(lo)
        vc = model.config.vision_config
        unit = vc.patch_size * vc.spatial_merge_size
        if side % unit:
            raise AdapterError(
                f"model '{card.id}': image_size {side} is not a multiple of patch_size*spatial_merge_size = {unit}"
            )
        return {
            "image_token_id": self.image_token_id(model.config),
            "video_token_id": model.config.video_token_id,
            "image_size": side,
            "merge_size": vc.spatial_merge_size,
            "image_tokens": (side // unit) ** 2,
        }

    # -- full size on the meta device ----------------------------------------------------------
    meta_capable = True
    config_class: type = Qwen2VLConfig

    def meta_config(self, card: ModelCard, config: Mapping[str, Any]) -> Any:
        from medprobe.models.meta import config_from_dict

        if config.get("model_type") not in self.model_types:
            raise AdapterError(
                f"published config of card '{card.id}': model_type {config.get('model_type')!r} is not one of "
                f"{list(self.model_types)} (family '{self.family}')"
            )
        return config_from_dict(self.config_class, config, f"published config of card '{card.id}'")

    def meta_model(self, card: ModelCard, config: Any) -> Any:
        from medprobe.models.meta import instantiate_on_meta

        return instantiate_on_meta(self.model_class(card), config)

    def image_tokens(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> ImageTokens:
        """At side s (card ``image_size``), patch p, merge m: (s/p)² packed patches per image in the
        vision blocks (one temporal patch: the image is repeated ``temporal_patch_size`` times),
        (s/(p*m))² merged tokens from the merger, the same count of ``<|image_pad|>`` positions."""
        side = _probe_size(card, {})
        vc = config.vision_config
        patch, merge = int(vc.patch_size), int(vc.spatial_merge_size)
        where = f"card '{card.id}'"
        if processor:
            for key, value in (("patch_size", patch), ("merge_size", merge)):
                if key in processor and int(processor[key]) != value:
                    raise AdapterError(f"{where}: processor {key} {processor[key]} differs from the model config ({value})")
            lo, hi = processor.get("min_pixels"), processor.get("max_pixels")
            if lo is not None and hi is not None and not int(lo) <= side * side <= int(hi):
                raise AdapterError(
                    f"{where}: image_size {side}² = {side * side} px lies outside the processor's pixel bounds [{lo}, {hi}]"
                )
        unit = patch * merge
        if side % unit:
            raise AdapterError(f"{where}: image_size {side} is not a multiple of patch_size*spatial_merge_size = {unit}")
        grid = side // patch
        merged = (side // unit) ** 2
        return ImageTokens(
            image_size=side, vision=grid * grid, connector=merged, llm=merged,
            rule=f"({side}/{patch})² = {grid * grid} packed patches; {merge}x{merge} merge -> ({side}/{unit})² = {merged} tokens",
        )

    def published_processor(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> Any:
        """The offline word tokenizer with a ``Qwen2VLImageProcessor`` built from the published
        settings (pixel bounds, patch, merge, mean / std), then fixed at ``image_size``² pixels."""
        proc = self.tiny_processor(card)
        keys = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")
        settings = {k: processor[k] for k in keys if processor and k in processor}
        proc.image_processor = Qwen2VLImageProcessor(**settings)
        return self.configure_processor(card, proc, {})

    # -- inputs --------------------------------------------------------------------------------
    def image_placeholder(self, processor: Any) -> str:
        tok = processor.tokenizer
        start = getattr(tok, "vision_start_token", None) or VISION_START
        end = getattr(tok, "vision_end_token", None) or VISION_END
        return f"{start}{processor.image_token}{end}"

    def image_token_id(self, config: Any) -> int:
        return int(config.image_token_id)

    def prepare_images(self, loaded: LoadedModel, images: Sequence[Any]) -> list[Any]:
        side = loaded.extra["image_size"]
        rgb = super().prepare_images(loaded, images)
        return [im if im.size == (side, side) else im.resize((side, side), Image.Resampling.BICUBIC) for im in rgb]

    def complete_inputs(self, loaded: LoadedModel, inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs.get("mm_token_type_ids") is None:  # 4.x-style processors do not return it
            ids = inputs["input_ids"]
            types = torch.zeros_like(ids)
            types[ids == loaded.extra["image_token_id"]] = 1
            types[ids == loaded.extra["video_token_id"]] = 2
            inputs["mm_token_type_ids"] = types
        return inputs

    def packed_counts(self, loaded: LoadedModel, inputs: Mapping[str, Any]) -> dict[str, list[int]]:
        """Per image: t*h*w patches in the vision blocks, t*h*w / merge² tokens after the merger."""
        grid = inputs["image_grid_thw"]
        patches = [int(n) for n in grid.prod(dim=1).tolist()]
        merge2 = loaded.extra["merge_size"] ** 2
        return {"vision": patches, "connector": [n // merge2 for n in patches]}


class Qwen2VLAdapter(_QwenVLAdapter):
    """Qwen2-VL (MedVLM-R1). Vision width ``vision_config.embed_dim``; the merger outputs
    ``vision_config.hidden_size`` (= the LLM width)."""

    family = "qwen2_vl"
    architectures = ("Qwen2VLForConditionalGeneration",)
    model_types = ("qwen2_vl",)
    vision_width = "vision_config.embed_dim"
    connector_width = "vision_config.hidden_size"
    processor_class = Qwen2VLProcessor
    config_class = Qwen2VLConfig

    def tiny_config(self, card: ModelCard, processor: Any) -> Any:
        tok = processor.tokenizer
        vision = {
            "depth": 4, "embed_dim": 32, "hidden_size": 48, "hidden_act": "quick_gelu", "mlp_ratio": 2,
            "num_heads": 4, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        }
        return Qwen2VLConfig(text_config=self.tiny_text_config(tok), vision_config=vision, **self.token_ids(tok))


class Qwen25VLAdapter(_QwenVLAdapter):
    """Qwen2.5-VL (Lingshu, HuatuoGPT-Vision-7B-Qwen2.5VL, ShizhenGPT-VL). Vision width
    ``vision_config.hidden_size``; the merger outputs ``vision_config.out_hidden_size``."""

    family = "qwen2_5_vl"
    architectures = ("Qwen2_5_VLForConditionalGeneration",)
    model_types = ("qwen2_5_vl",)
    vision_width = "vision_config.hidden_size"
    connector_width = "vision_config.out_hidden_size"
    processor_class = Qwen2_5_VLProcessor
    config_class = Qwen2_5_VLConfig

    def tiny_config(self, card: ModelCard, processor: Any) -> Any:
        tok = processor.tokenizer
        vision = {
            "depth": 4, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 48, "num_heads": 4,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
            "fullatt_block_indexes": [1, 3],
        }
        return Qwen2_5_VLConfig(text_config=self.tiny_text_config(tok), vision_config=vision, **self.token_ids(tok))


def _probe_size(card: ModelCard, options: Mapping[str, Any]) -> int:
    value = options.get("image_size") or card.setting("image_size") or DEFAULT_IMAGE_SIZE
    try:
        side = int(value)
    except (TypeError, ValueError):
        raise AdapterError(f"card '{card.id}': image_size must be an integer, got {value!r}") from None
    if side <= 0:
        raise AdapterError(f"card '{card.id}': image_size must be positive, got {side}")
    return side
