"""Gemma 3 adapter (MedGemma 4B / 27B multimodal, Gemma-3-4B).

Layer map (candidate paths, first match wins; module names of transformers 5.24.0
``models/gemma3/modeling_gemma3.py`` and ``models/siglip/modeling_siglip.py``, and of 4.51's):

=========  ====================================  ==============================================  ======
stage      transformers >= 5.6                   4.52 - 5.5  /  <= 4.51                          layout
=========  ====================================  ==============================================  ======
vision     ``model.vision_tower.encoder.         ``model.vision_tower.vision_model.encoder.      NLC
           layers.N``                            layers.N`` / ``vision_tower.vision_model.…``
connector  ``model.multi_modal_projector``       ``multi_modal_projector`` (<= 4.51)             NLC
llm        ``model.language_model.layers.N``     ``language_model.model.layers.N`` (<= 4.51)     NLC
=========  ====================================  ==============================================  ======

SigLIP has no CLS token (``prefix_tokens`` 0). The projector receives the tower's
``last_hidden_state`` (post-LN output of the last block), so the last block feeds the connector;
its output is ``mm_tokens_per_image`` pooled, projected tokens per image, (B, mm_tokens, C_llm).

Inputs: the processor expands ``<start_of_image>`` to ``mm_tokens_per_image`` image soft tokens
between boi/eoi and returns ``token_type_ids`` (1 on image tokens), which the model needs for
bidirectional attention among image tokens.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor, Gemma3TextConfig, SiglipVisionConfig

from medprobe.adapter import AdapterError, ImageTokens, LoadedModel
from medprobe.cards import ModelCard
from medprobe.models.hf.stock import StockMLLMAdapter, adds_special_tokens, config_int
from medprobe.models.hf.tokenizer import build_word_tokenizer
from medprobe.layermap import LayerGroup

VISION_LAYERS = (
    "model.vision_tower.encoder.layers",  # >= 5.6 (SiglipVisionModel flattened)
    "model.vision_tower.vision_model.encoder.layers",  # 4.52 - 5.5
    "vision_tower.vision_model.encoder.layers",  # <= 4.51
)
PROJECTOR = ("model.multi_modal_projector", "multi_modal_projector")
LLM_LAYERS = ("model.language_model.layers", "language_model.model.layers")

#: tiny models: 32 px, patch 4 -> 8x8 patches, pooled to 2x2 = 4 image tokens
TINY_IMAGE_SIZE = 32
TINY_MM_TOKENS = 4

BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"

#: Gemma turn format; an image item renders as <start_of_image>
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class Gemma3Adapter(StockMLLMAdapter):
    family = "gemma3"
    architectures = ("Gemma3ForConditionalGeneration",)
    model_types = ("gemma3",)

    # -- layer map -----------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        return (
            LayerGroup(
                "vision", "vision.{i:02d}", VISION_LAYERS, count="vision_config.num_hidden_layers",
                layout="NLC", width="vision_config.hidden_size", prefix_tokens=0, feeds_connector=-1,
            ),
            LayerGroup("connector", "connector", PROJECTOR, repeated=False, layout="NLC", width="text_config.hidden_size"),
            LayerGroup(
                "llm", "llm.{i:02d}", LLM_LAYERS, count="text_config.num_hidden_layers",
                layout="NLC", width="text_config.hidden_size",
            ),
        )

    # -- tiny model ----------------------------------------------------------------------------
    def tiny_processor(self, card: ModelCard) -> Any:
        tokenizer = build_word_tokenizer(
            special_tokens=("<start_of_turn>", "<end_of_turn>"),
            named_tokens={"image_token": SOFT, "boi_token": BOI, "eoi_token": EOI},
            bos_token="<bos>",
            eos_token="<eos>",
            add_bos=True,
            chat_template=TINY_CHAT_TEMPLATE,
        )
        image_processor = Gemma3ImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
        return Gemma3Processor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            image_seq_length=TINY_MM_TOKENS,
            chat_template=TINY_CHAT_TEMPLATE,
        )

    def tiny_config(self, card: ModelCard, processor: Any) -> Any:
        tok = processor.tokenizer
        vision = SiglipVisionConfig(
            image_size=TINY_IMAGE_SIZE, patch_size=4, hidden_size=32, intermediate_size=64,
            num_hidden_layers=4, num_attention_heads=4, vision_use_head=False,
        )
        text = Gemma3TextConfig(
            vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=1, head_dim=12, sliding_window=16,
            max_position_embeddings=256, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        return Gemma3Config(
            vision_config=vision,
            text_config=text,
            mm_tokens_per_image=TINY_MM_TOKENS,
            image_token_index=tok.image_token_id,
            boi_token_index=tok.boi_token_id,
            eoi_token_index=tok.eoi_token_id,
        )

    # -- full size on the meta device ----------------------------------------------------------
    meta_capable = True

    def meta_config(self, card: ModelCard, config: Mapping[str, Any]) -> Any:
        from medprobe.models.meta import config_from_dict

        if config.get("model_type") not in self.model_types:
            raise AdapterError(
                f"published config of card '{card.id}': model_type {config.get('model_type')!r} is not one of "
                f"{list(self.model_types)} (family 'gemma3')"
            )
        return config_from_dict(Gemma3Config, config, f"published config of card '{card.id}'")

    def meta_model(self, card: ModelCard, config: Any) -> Any:
        from medprobe.models.meta import instantiate_on_meta

        return instantiate_on_meta(self.model_class(card), config)

    def image_tokens(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> ImageTokens:
        """SigLIP at s = ``vision_config.image_size``, patch p: (s/p)² patch tokens per image (no
        CLS); the projector average-pools them to ``mm_tokens_per_image`` soft tokens, which is
        also the number of ``<image_soft_token>`` positions the processor expands per image."""
        vc = config.vision_config
        side, patch = int(vc.image_size), int(vc.patch_size)
        soft = int(config.mm_tokens_per_image)
        where = f"card '{card.id}'"
        wanted = card.setting("image_size")
        if wanted is not None and int(wanted) != side:
            raise AdapterError(f"{where}: setting image_size {wanted} differs from vision_config.image_size {side}")
        if processor:
            size = processor.get("size") or {}
            if size and (int(size.get("height", side)), int(size.get("width", side))) != (side, side):
                raise AdapterError(f"{where}: processor size {size} differs from vision_config.image_size {side}")
            seq = processor.get("image_seq_length")
            if seq is not None and int(seq) != soft:
                raise AdapterError(f"{where}: processor image_seq_length {seq} differs from mm_tokens_per_image {soft}")
        grid = side // patch
        return ImageTokens(
            image_size=side, vision=grid * grid, connector=soft, llm=soft,
            rule=f"({side}/{patch})² = {grid * grid} SigLIP patches, pooled to mm_tokens_per_image = {soft} soft tokens",
        )

    def published_processor(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> Any:
        """The offline word tokenizer with a ``Gemma3ImageProcessor`` from the published settings
        (size, mean / std, resample) and the published ``image_seq_length``."""
        proc = self.tiny_processor(card)
        keys = ("size", "image_mean", "image_std", "resample", "rescale_factor", "do_normalize", "do_rescale", "do_resize")
        settings = {k: processor[k] for k in keys if processor and processor.get(k) is not None}
        seq = int((processor or {}).get("image_seq_length") or config.mm_tokens_per_image)
        return Gemma3Processor(
            image_processor=Gemma3ImageProcessor(**settings), tokenizer=proc.tokenizer, image_seq_length=seq,
            chat_template=TINY_CHAT_TEMPLATE,
        )

    # -- inputs --------------------------------------------------------------------------------
    def image_placeholder(self, processor: Any) -> str:
        return processor.tokenizer.boi_token or BOI

    def image_token_id(self, config: Any) -> int:
        return config_int(config, "image_token_index", "image_token_id")

    def call_processor(self, loaded: LoadedModel, images: list[Any], texts: list[str]) -> dict[str, Any]:
        # Gemma3Processor takes one list of images per text
        return dict(
            loaded.processor(
                images=[[im] for im in images], text=texts, padding=True, return_tensors="pt",
                add_special_tokens=adds_special_tokens(loaded.processor, texts),
            )
        )

    def complete_inputs(self, loaded: LoadedModel, inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs.get("token_type_ids") is None:
            ids = inputs["input_ids"]
            inputs["token_type_ids"] = (ids == self.image_token_id(loaded.config)).to(torch.long)
        return inputs
