"""LLaVA adapter (``LlavaForConditionalGeneration``: LLaVA-1.5, LLaVA-Med-hf, HuatuoGPT-Vision-hf,
BiMediX2-8B-hf), text model Llama, Mistral or Qwen2.

Layer map (candidate paths, first match wins; module names of transformers 5.24.0
``models/llava/modeling_llava.py`` and ``models/clip/modeling_clip.py``, and of 4.51's):

=========  ======================================  ==============================================  ======
stage      transformers >= 5.6                     4.52 - 5.5  /  <= 4.51                          layout
=========  ======================================  ==============================================  ======
vision     ``model.vision_tower.encoder.layers.N``  ``model.vision_tower.vision_model.encoder.      NLC
                                                   layers.N`` / ``vision_tower.vision_model.…``
connector  ``model.multi_modal_projector``         ``multi_modal_projector`` (<= 4.51)             NLC
llm        ``model.language_model.layers.N``       ``language_model.model.layers.N`` (<= 4.51)     NLC
=========  ======================================  ==============================================  ======

CLIP vision blocks carry one CLS token (``prefix_tokens`` 1; SigLIP towers 0). The projector is fed
``hidden_states[vision_feature_layer]`` of the tower, CLS dropped for the ``"default"`` strategy:
hidden-states index k < 0 is the output of block k (k = -2: the second-to-last block), k > 0 of
block k - 1. Blocks after the feeding block run but never reach the LLM (``used=False``). A list
of layers (concatenated features) is fed up to its deepest member.

Original-code checkpoints (``model_type`` ``llava_mistral`` / ``llava_llama`` / ``llava_qwen2``;
cards with ``loader = "convert"``) are refused: they must be converted to this layout first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor, MistralConfig, Qwen2Config

from medprobe.adapter import AdapterError, ImageTokens
from medprobe.cards import ModelCard
from medprobe.models.hf.loading import PretrainedSource
from medprobe.models.hf.stock import StockMLLMAdapter, config_int
from medprobe.models.hf.tokenizer import build_word_tokenizer
from medprobe.layermap import LayerGroup

VISION_LAYERS = (
    "model.vision_tower.encoder.layers",  # >= 5.6 (CLIPVisionModel flattened)
    "model.vision_tower.vision_model.encoder.layers",  # 4.52 - 5.5
    "vision_tower.vision_model.encoder.layers",  # <= 4.51
)
PROJECTOR = ("model.multi_modal_projector", "multi_modal_projector")
LLM_LAYERS = ("model.language_model.layers", "language_model.model.layers")

#: card setting ``text_model_type`` -> text config class of the tiny model
TEXT_CONFIGS = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}

DEFAULT_FEATURE_LAYER = -2
DEFAULT_STRATEGY = "default"
#: tiny models: 28 px, patch 7 -> 16 patch tokens + CLS
TINY_IMAGE_SIZE = 28
TINY_PATCH = 7

IMAGE = "<image>"

#: the llava-1.5 conversation format; an image item renders as <image> on its own line
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def feeding_block(vision_feature_layer: int | Sequence[int], num_blocks: int, where: str) -> int:
    """The vision block (0-based) whose output the projector receives.

    ``vision_feature_layer`` indexes the tower's ``hidden_states`` (entry 0 = embeddings, entry k =
    output of block k-1): k < 0 -> block ``num_blocks + k``; k > 0 -> block ``k - 1``. For a list,
    the deepest member. Raises :class:`AdapterError` (naming ``where``) for the embeddings (k = 0)
    or an index outside the tower.
    """
    layers = list(vision_feature_layer) if isinstance(vision_feature_layer, (list, tuple)) else [vision_feature_layer]
    if not layers:
        raise AdapterError(f"{where}: vision_feature_layer is an empty list")
    blocks = []
    for k in layers:
        k = int(k)
        if k == 0:
            raise AdapterError(f"{where}: vision_feature_layer 0 selects the patch embeddings, not a vision block")
        block = num_blocks + k if k < 0 else k - 1
        if not 0 <= block < num_blocks:
            raise AdapterError(f"{where}: vision_feature_layer {k} is outside a tower of {num_blocks} blocks")
        blocks.append(block)
    return max(blocks)


def cls_tokens(vision_model_type: str | None, strategy: str) -> int:
    """Prefix (CLS) tokens in the tower's block outputs: CLIP 1, SigLIP 0; other towers follow
    the select strategy (``"default"`` assumes one CLS to drop)."""
    mt = (vision_model_type or "").lower()
    if mt.startswith("clip"):
        return 1
    if mt.startswith("siglip"):
        return 0
    return 1 if strategy == "default" else 0


class LlavaAdapter(StockMLLMAdapter):
    family = "llava"
    loaders = ("stock", "convert")
    architectures = ("LlavaForConditionalGeneration",)
    model_types = ("llava",)

    # -- layer map -----------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        vision_cfg = getattr(config, "vision_config", None)
        strategy = getattr(config, "vision_feature_select_strategy", None) or card.setting(
            "vision_feature_select_strategy", DEFAULT_STRATEGY
        )
        feature_layer = getattr(config, "vision_feature_layer", None)
        if feature_layer is None:
            feature_layer = card.setting("vision_feature_layer", DEFAULT_FEATURE_LAYER)
        num_blocks = getattr(vision_cfg, "num_hidden_layers", None)
        if not isinstance(num_blocks, int):
            raise AdapterError(f"card '{card.id}': the config has no vision_config.num_hidden_layers")
        feed = feeding_block(feature_layer, num_blocks, f"card '{card.id}'")
        prefix = cls_tokens(getattr(vision_cfg, "model_type", None), strategy)
        return (
            LayerGroup(
                "vision", "vision.{i:02d}", VISION_LAYERS, count="vision_config.num_hidden_layers",
                layout="NLC", width="vision_config.hidden_size", prefix_tokens=prefix, feeds_connector=feed,
            ),
            LayerGroup(
                "connector", "connector", PROJECTOR, repeated=False, layout="NLC", width="text_config.hidden_size",
                prefix_tokens=prefix if strategy == "full" else 0,
            ),
            LayerGroup(
                "llm", "llm.{i:02d}", LLM_LAYERS, count="text_config.num_hidden_layers",
                layout="NLC", width="text_config.hidden_size",
            ),
        )

    # -- tiny model ----------------------------------------------------------------------------
    def tiny_processor(self, card: ModelCard) -> Any:
        tokenizer = build_word_tokenizer(
            named_tokens={"image_token": IMAGE},
            add_bos=card.setting("text_model_type", "llama") != "qwen2",  # Llama/Mistral add <s>, Qwen2 adds none
            chat_template=TINY_CHAT_TEMPLATE,
        )
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
        )
        return LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=TINY_PATCH,
            vision_feature_select_strategy=card.setting("vision_feature_select_strategy", DEFAULT_STRATEGY),
            num_additional_image_tokens=1,
            chat_template=TINY_CHAT_TEMPLATE,
        )

    def tiny_config(self, card: ModelCard, processor: Any) -> Any:
        tok = processor.tokenizer
        text_type = card.setting("text_model_type", "llama")
        if text_type not in TEXT_CONFIGS:
            raise AdapterError(
                f"card '{card.id}': text_model_type '{text_type}' is not one of {sorted(TEXT_CONFIGS)}"
            )
        text = TEXT_CONFIGS[text_type](
            vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        )
        vision = CLIPVisionConfig(
            image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH, hidden_size=32, intermediate_size=64,
            num_hidden_layers=4, num_attention_heads=4, projection_dim=32,
        )
        strategy = card.setting("vision_feature_select_strategy", DEFAULT_STRATEGY)
        patches = (TINY_IMAGE_SIZE // TINY_PATCH) ** 2
        return LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tok.image_token_id,
            vision_feature_layer=card.setting("vision_feature_layer", DEFAULT_FEATURE_LAYER),
            vision_feature_select_strategy=strategy,
            image_seq_length=patches if strategy == "default" else patches + 1,
        )

    # -- loading -------------------------------------------------------------------------------
    def model_class(self, card: ModelCard) -> type:
        """``LlavaForConditionalGeneration``; a ``loader = "convert"`` card names its original-code
        class (``LlavaMistralForCausalLM`` ...) and is loaded, once converted, in the stock layout."""
        if card.loader == "convert":
            card = dataclasses.replace(card, architecture=self.architectures[0])
        return super().model_class(card)

    def wrong_model_type(self, card: ModelCard, src: PretrainedSource, model_type: str | None) -> AdapterError:
        original = card.setting("original_model_type")
        if card.loader == "convert" or (model_type or "").startswith("llava_") or (original and model_type == original):
            where = f"{src.location}/config.json" if src.is_local else f"config.json of {src.weights}"
            return AdapterError(
                f"{where}: model_type '{model_type}' is the original LLaVA-code layout, which transformers' "
                f"LlavaForConditionalGeneration cannot load (card '{card.id}'). Convert the checkpoint first with "
                f"`medprobe convert llava-original SRC DST` and load DST"
            )
        return super().wrong_model_type(card, src, model_type)

    def loaded_extra(self, card: ModelCard, model: Any, processor: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        extra = super().loaded_extra(card, model, processor, options)
        extra["image_size"] = model.config.vision_config.image_size
        return extra

    # -- full size on the meta device ----------------------------------------------------------
    meta_capable = True

    def meta_config(self, card: ModelCard, config: Mapping[str, Any]) -> Any:
        """A stock ``LlavaConfig``: read as is for ``model_type`` llava; an original LLaVA-code
        config (``llava_llama`` / ``llava_mistral`` / ``llava_qwen2``) is mapped as the converter
        (``medprobe convert llava-original``) maps it: text config from its fields, the CLIP tower
        named by ``mm_vision_tower``, ``mm_vision_select_layer`` / ``_feature`` as the feature layer
        and strategy. The converted vocabulary is the published ``vocab_size`` (the converter adds
        ``<image>`` / pad rows only when the tokenizer fills it)."""
        from medprobe.models.meta import config_from_dict

        where = f"published config of card '{card.id}'"
        if config.get("model_type") == "llava":
            return config_from_dict(LlavaConfig, config, where)
        from medprobe_llava.convert import ConversionError, is_original_config, mm_settings, text_config_from_original, vision_config_for

        if not is_original_config(config):
            raise AdapterError(f"{where}: model_type {config.get('model_type')!r} is neither llava nor an original LLaVA-code type")
        try:
            settings = mm_settings(config, where)
            text, _ = text_config_from_original(config, where)
            vision, _ = vision_config_for(config, {}, None, where)
        except ConversionError as exc:
            raise AdapterError(str(exc)) from None
        tied = bool(config.get("tie_word_embeddings", False))
        text.tie_word_embeddings = tied
        patches = (vision.image_size // vision.patch_size) ** 2
        return LlavaConfig(
            vision_config=vision, text_config=text,
            vision_feature_layer=settings["vision_feature_layer"],
            vision_feature_select_strategy=settings["strategy"],
            image_seq_length=patches if settings["strategy"] == "default" else patches + 1,
            projector_hidden_act="gelu", tie_word_embeddings=tied,
        )

    def meta_model(self, card: ModelCard, config: Any) -> Any:
        from medprobe.models.meta import instantiate_on_meta

        return instantiate_on_meta(self.model_class(card), config)

    def image_tokens(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> ImageTokens:
        """CLIP at s = ``vision_config.image_size``, patch p: (s/p)² patches + CLS in the blocks;
        the projector gets (s/p)² tokens (strategy ``default`` drops CLS; ``full`` keeps it) and the
        processor expands ``<image>`` to the same number of positions."""
        vc = config.vision_config
        side, patch = int(vc.image_size), int(vc.patch_size)
        strategy = getattr(config, "vision_feature_select_strategy", DEFAULT_STRATEGY)
        prefix = cls_tokens(getattr(vc, "model_type", None), strategy)
        where = f"card '{card.id}'"
        wanted = card.setting("image_size")
        if wanted is not None and int(wanted) != side:
            raise AdapterError(f"{where}: setting image_size {wanted} differs from vision_config.image_size {side}")
        if processor:
            crop = processor.get("crop_size") or {}
            if crop and (int(crop.get("height", side)), int(crop.get("width", side))) != (side, side):
                raise AdapterError(f"{where}: processor crop_size {crop} differs from vision_config.image_size {side}")
        grid = (side // patch) ** 2
        fed = grid if strategy == "default" else grid + prefix
        return ImageTokens(
            image_size=side, vision=grid + prefix, prefix=prefix, connector=fed, llm=fed,
            rule=f"({side}/{patch})² = {grid} patches + {prefix} CLS; strategy '{strategy}' feeds {fed}",
        )

    def published_processor(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> Any:
        """The offline word tokenizer with a ``CLIPImageProcessor`` from the published settings
        (else resize / crop at the tower's image size) and the model's patch size and strategy."""
        proc = self.tiny_processor(card)
        side = int(config.vision_config.image_size)
        keys = ("size", "crop_size", "image_mean", "image_std", "resample", "do_center_crop", "rescale_factor")
        settings = {k: processor[k] for k in keys if processor and processor.get(k) is not None}
        settings.setdefault("size", {"shortest_edge": side})
        settings.setdefault("crop_size", {"height": side, "width": side})
        strategy = getattr(config, "vision_feature_select_strategy", DEFAULT_STRATEGY)
        return LlavaProcessor(
            image_processor=CLIPImageProcessor(**settings), tokenizer=proc.tokenizer,
            patch_size=int(config.vision_config.patch_size), vision_feature_select_strategy=strategy,
            num_additional_image_tokens=cls_tokens(getattr(config.vision_config, "model_type", None), strategy),
            chat_template=TINY_CHAT_TEMPLATE,
        )

    # -- inputs --------------------------------------------------------------------------------
    def image_placeholder(self, processor: Any) -> str:
        return getattr(processor, "image_token", None) or IMAGE

    def image_token_id(self, config: Any) -> int:
        return config_int(config, "image_token_index", "image_token_id")
