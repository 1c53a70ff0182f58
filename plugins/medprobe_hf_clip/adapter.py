"""The ``hf_clip`` adapter: the vision tower of a transformers ``CLIPModel`` / ``SiglipModel``.

Card fields read: ``hub_id`` (or a local directory passed as ``source``), ``settings.model_class``
(``CLIPModel`` or ``SiglipModel``) and, optionally, ``settings.vision_config`` (a table of
vision-config values, e.g. ``num_hidden_layers``, used by tiny builds when the checkpoint's
``config.json`` is not in the local cache).

**Layer map** (from the config, resolved against the module tree):

* ``vision.{i:02d}`` = ``vision_model.encoder.layers.{i}`` (``NLC``; transformers 5.0-5.5 also
  nest ``vision_model.vision_model.encoder.layers``): CLIP blocks carry 1 prefix token (CLS),
  SigLIP blocks none.
* ``head`` (``NC``): CLIP ``vision_model.post_layernorm`` (it normalises the pooled CLS token,
  (B, C)); SigLIP ``vision_model.head`` (attention pooling, (B, C)) when the config uses the head.
  SigLIP's ``post_layernorm`` acts on every token and is not a head.

**Tiny model**: the card's model class with a tiny config: the vision tower keeps its depth and
patch size (from ``settings.vision_config``, else the cached ``config.json``, else the config
class defaults; the map's notes say which) at width 32 and a 4x4 patch grid; the text tower is
a one-layer stub. The image processor is built in-process.

**Forward**: ``model.vision_model(pixel_values=...)`` only; the text tower never runs.

**Encoders** (zero-shot classification, ``medprobe train``): :meth:`HFClipAdapter.encode_images`
is ``get_image_features`` ((B, D): CLIP's projected embedding, SigLIP's pooled head output),
differentiable; :meth:`HFClipAdapter.encode_texts` is ``get_text_features`` ((N, D)). Real
checkpoints tokenize with their own tokenizer (``AutoTokenizer`` from the checkpoint; SigLIP pads
to ``max_position_embeddings`` as it was trained, CLIP pads to the longest text); tiny models use
the in-process :class:`~medprobe_hf_clip.tiny_text.HashedWordTokenizer`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import transformers

from medprobe.adapter import AdapterError, Batch, LoadedModel, ModelAdapter
from medprobe.cards import ModelCard
from medprobe.models.hf.loading import adhoc_card, architectures_of, model_device, pretrained_source
from medprobe.models.hf.tiny import seeded, tiny_resolved_against, tiny_weights
from medprobe.layermap import LayerGroup, LayerMap
from medprobe.runtime import torch_dtype

from .tiny_text import HashedWordTokenizer


def rgb_image(image: Any, model: str) -> Any:
    """``image`` as an RGB PIL image; :class:`AdapterError` naming ``model`` for anything else."""
    if not hasattr(image, "convert") or not hasattr(image, "mode"):
        raise AdapterError(f"model '{model}': preprocess expects PIL images, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


@dataclass(frozen=True)
class _Family:
    """What differs between CLIP and SigLIP: class names, prefix tokens, the head's paths."""

    model: str
    config: str
    vision_config: str
    prefix_tokens: int
    head: tuple[str, ...]
    head_note: str


FAMILIES = {
    "CLIPModel": _Family(
        "CLIPModel", "CLIPConfig", "CLIPVisionConfig", 1,
        ("vision_model.post_layernorm", "vision_model.vision_model.post_layernorm"),
        "head = post_layernorm of the pooled CLS token (B, C), before visual_projection",
    ),
    "SiglipModel": _Family(
        "SiglipModel", "SiglipConfig", "SiglipVisionConfig", 0,
        ("vision_model.head", "vision_model.vision_model.head"),
        "head = the attention-pooling head's (B, C) output, SigLIP's image embedding",
    ),
}
VISION_BLOCKS = ("vision_model.encoder.layers", "vision_model.vision_model.encoder.layers")
#: vision-config values a tiny model keeps from the real one
KEPT_VISION_KEYS = ("num_hidden_layers", "patch_size", "num_channels", "hidden_act", "layer_norm_eps", "vision_use_head")
TINY_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
TINY_TEXT = {
    "vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
    "num_attention_heads": 4, "max_position_embeddings": 16, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}
TINY_GRID = 4
FIX_HINT = "pass --weights DIR (a local checkpoint folder with config.json) or --random-init"


class HFClipAdapter(ModelAdapter):
    """transformers CLIP / SigLIP vision towers; see the module docstring."""

    family = "hf_clip"
    names_ad_hoc_models = True
    encodes_images = True
    has_text_tower = True
    version = "1"

    def kind(self, card: ModelCard) -> _Family:
        name = card.setting("model_class") or card.architecture
        if name not in FAMILIES:
            raise AdapterError(f"card '{card.id}': settings.model_class {name!r} is not one of {sorted(FAMILIES)}")
        return FAMILIES[name]

    # -- model names -------------------------------------------------------------------------
    def matches_checkpoint(self, config: Mapping[str, Any]) -> bool:
        """A CLIPModel / SiglipModel checkpoint (``architectures`` or ``model_type`` clip / siglip)."""
        return bool(set(architectures_of(config)) & set(FAMILIES)) or config.get("model_type") in ("clip", "siglip")

    def card_for_name(self, name: str) -> ModelCard:
        """``hf_clip:DIR`` or ``hf_clip:ORG/NAME`` (CLIPModel unless the directory's config says
        SiglipModel; a SigLIP hub id needs a card or its directory)."""
        def settings(arch: str, config: Mapping[str, Any]) -> dict[str, Any]:
            if arch not in FAMILIES and config.get("model_type") == "siglip":
                arch = "SiglipModel"
            return {"model_class": arch}

        card = adhoc_card(self.family, name, kind="baseline", architectures=tuple(FAMILIES), matches=self.matches_checkpoint,
                          settings=settings)
        return dataclasses.replace(card, architecture=card.setting("model_class"), category="contrastive")

    # -- layer map ---------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        """Vision blocks (count and width from ``config.vision_config``) and the pooled head."""
        fam = self.kind(card)
        groups = [
            LayerGroup(
                "vision", "vision.{i:02d}", VISION_BLOCKS,
                count="vision_config.num_hidden_layers", width="vision_config.hidden_size",
                layout="NLC", prefix_tokens=fam.prefix_tokens,
            )
        ]
        vision = getattr(config, "vision_config", None)
        if fam.model == "CLIPModel" or getattr(vision, "vision_use_head", True):
            groups.append(LayerGroup("head", "head", fam.head, repeated=False, layout="NC", width="vision_config.hidden_size"))
        return groups

    def layer_map(self, card: ModelCard, model: Any, config: Any = None, resolved_against: str = "") -> LayerMap:
        """Resolve :meth:`layer_groups` on ``model`` and note what the head is."""
        lmap = super().layer_map(card, model, config, resolved_against)
        note = (self.kind(card).head_note,) if "head" in lmap.ids else ()
        return LayerMap(lmap.model, lmap.layers, lmap.resolved_against, lmap.notes + note)

    # -- tiny --------------------------------------------------------------------------------
    def _vision_values(self, card: ModelCard, fam: _Family) -> tuple[dict[str, Any], str]:
        """The real vision config's values that a tiny model keeps, and where they came from."""
        own = card.setting("vision_config")
        if isinstance(own, Mapping):
            return dict(own), "card settings.vision_config"
        config_cls = getattr(transformers, fam.config)
        if card.hub_id:
            try:
                real = config_cls.from_pretrained(card.hub_id, revision=card.revision, local_files_only=True)
                return real.vision_config.to_dict(), f"cached config.json of {card.hub_id}"
            except Exception:  # not in the local cache: fall back to the class defaults
                pass
        return getattr(transformers, fam.vision_config)().to_dict(), f"{fam.vision_config} defaults (config.json of the checkpoint not cached)"

    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        """The card's model class with a tiny config (see the module docstring)."""
        fam = self.kind(card)
        values, source = self._vision_values(card, fam)
        vision = {k: values[k] for k in KEPT_VISION_KEYS if k in values}
        side = int(vision.get("patch_size", 16)) * TINY_GRID
        vision.update(TINY_VISION, image_size=side)
        extra_cfg = {"projection_dim": 16} if fam.model == "CLIPModel" else {}
        config = getattr(transformers, fam.config)(text_config=dict(TINY_TEXT), vision_config=vision, **extra_cfg)
        with seeded(seed):
            model = getattr(transformers, fam.model)(config)
        model.eval()
        if fam.model == "CLIPModel":
            processor = transformers.CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        else:
            processor = transformers.SiglipImageProcessor(size={"height": side, "width": side})
        lmap = self.layer_map(card, model, config, resolved_against=tiny_resolved_against(f"{fam.model} ({source})", seed))
        lmap = LayerMap(lmap.model, lmap.layers, lmap.resolved_against, (f"vision depth and patch size from {source}",) + lmap.notes)
        return LoadedModel(
            adapter=self,
            card=card, model=model, layer_map=lmap, processor=processor, config=config,
            weights=tiny_weights(seed), device="cpu", dtype="float32",
            extra={"image_size": (side, side), "config_source": source},
        )

    # -- loading -----------------------------------------------------------------------------
    def load(
        self,
        card: ModelCard,
        source: str | None = None,
        *,
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        device_map: str | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
        **options: Any,
    ) -> LoadedModel:
        """``getattr(transformers, model_class).from_pretrained(source or hub_id)`` plus its image
        processor. ``weights`` is a local checkpoint folder (same as ``source``);
        ``random_init`` builds the class from the checkpoint's config with seeded random weights.
        ``HF_HUB_OFFLINE=1`` loads from the local cache only."""
        fam = self.kind(card)
        if weights is not None:
            if not Path(weights).expanduser().is_dir():
                raise AdapterError(f"{weights}: hf_clip weights must be a checkpoint folder (config.json + weights)")
            source = str(weights)
        src = pretrained_source(card, source, revision=revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                fix=FIX_HINT)
        model_cls = getattr(transformers, fam.model)
        try:
            if random_init:
                config = getattr(transformers, fam.config).from_pretrained(src.location, **src.processor_kwargs())
                with seeded(seed):
                    model = model_cls(config).to(dtype=torch_dtype(src.dtype_name))
                label = "random-init"
            else:
                model = model_cls.from_pretrained(src.location, **src.model_kwargs(device_map=device_map))
                label = src.weights
            processor = transformers.AutoImageProcessor.from_pretrained(src.location, **src.processor_kwargs())
        except Exception as exc:
            raise AdapterError(
                f"card '{card.id}': cannot load {fam.model} from '{src.location}' ({src.weights}): "
                f"{type(exc).__name__}: {exc}. Offline? {FIX_HINT}"
            ) from exc
        if device_map is None:
            model = model.to(device)
        model.eval()
        lmap = self.layer_map(card, model, model.config, resolved_against=f"{fam.model} ({label})")
        side = int(model.config.vision_config.image_size)
        extra: dict[str, Any] = {
            "image_size": (side, side),
            "pretrained_location": src.location,
            "pretrained_kwargs": src.processor_kwargs(),
        }
        if options:
            extra["ignored_options"] = sorted(options)
        return LoadedModel(
            adapter=self,
            card=card, model=model, layer_map=lmap, processor=processor, config=model.config,
            weights=label, device=model_device(model), dtype=src.dtype_name, extra=extra,
        )

    # -- inputs and forward ------------------------------------------------------------------
    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        """B images -> ``pixel_values`` (B, 3, H, W) through the checkpoint's image processor."""
        if not images:
            raise AdapterError(f"model '{loaded.card.id}': preprocess got no images")
        out = loaded.processor(images=[rgb_image(img, loaded.card.id) for img in images], return_tensors="pt")
        x = out["pixel_values"].to(device=loaded.device, dtype=torch_dtype(loaded.dtype))
        return Batch(inputs={"pixel_values": x}, size=len(images))

    def encode_images(self, loaded: LoadedModel, batch: Batch) -> torch.Tensor:
        """(B, D) image embeddings (``get_image_features``), with gradients when the caller
        enables them."""
        out = loaded.model.get_image_features(pixel_values=batch.inputs["pixel_values"])
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def tokenizer(self, loaded: LoadedModel) -> Any:
        """The text tokenizer (cached in ``loaded.extra["tokenizer"]``): the checkpoint's own
        (``AutoTokenizer``), or a :class:`HashedWordTokenizer` for tiny models."""
        tok = loaded.extra.get("tokenizer")
        if tok is not None:
            return tok
        text_cfg = loaded.model.config.text_config
        if loaded.weights.startswith("tiny-random"):
            tok = HashedWordTokenizer(text_cfg.vocab_size, text_cfg.max_position_embeddings)
        else:
            location = loaded.extra.get("pretrained_location") or loaded.card.hub_id
            try:
                tok = transformers.AutoTokenizer.from_pretrained(location, **loaded.extra.get("pretrained_kwargs", {}))
            except Exception as exc:
                raise AdapterError(
                    f"model '{loaded.card.id}': cannot load the tokenizer of '{location}': {type(exc).__name__}: {exc}. "
                    "Offline? the tokenizer files must be in the checkpoint folder or the local cache"
                ) from exc
        loaded.extra["tokenizer"] = tok
        return tok

    def encode_texts(self, loaded: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
        """N texts -> (N, D) text embeddings (``get_text_features``)."""
        if not texts:
            raise AdapterError(f"model '{loaded.card.id}': encode_texts got no texts")
        fam = self.kind(loaded.card)
        tok = self.tokenizer(loaded)
        siglip = fam.model == "SiglipModel"
        if isinstance(tok, HashedWordTokenizer):
            enc = tok(list(texts))
        else:
            longest = int(loaded.model.config.text_config.max_position_embeddings)
            enc = tok(list(texts), padding="max_length" if siglip else True, truncation=True, max_length=longest,
                      return_tensors="pt")
        # SigLIP was trained without an attention mask (max-length padding); CLIP masks its padding
        keys = ("input_ids",) if siglip else ("input_ids", "attention_mask")
        inputs = {k: enc[k].to(loaded.device) for k in keys if k in enc}
        out = loaded.model.get_text_features(**inputs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        """``model.vision_model(pixel_values=...)``: the vision blocks and the pooled head."""
        with torch.no_grad():
            loaded.model.vision_model(pixel_values=batch.inputs["pixel_values"])
