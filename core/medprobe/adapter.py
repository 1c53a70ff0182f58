"""The architecture-adapter contract: what a family plugin implements.

An adapter knows one architecture family (``qwen2_5_vl``, ``gemma3``, ``llava``, ``timm``, ...):
how to load a checkpoint of it, how to build a tiny random model of the *same class* offline,
which modules to hook (its :class:`~medprobe.layermap.LayerGroup` s), how to turn images (and a
prompt) into model inputs, and how to run the forward pass the capture engine hooks.

Plugins register adapters lazily::

    @hookimpl
    def register_adapters(register):
        register("qwen2_5_vl", "medprobe_qwen_vl.adapter:Qwen25VLAdapter", "Qwen2.5-VL (stock)")

This module imports no torch; adapters import torch inside their methods or in their own
modules (which are imported only when a model of the family is used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .cards import ModelCard
from .layermap import LayerGroup, LayerMap, resolve_layer_map
from .registry import MedprobeError


class AdapterError(MedprobeError):
    """An adapter cannot do what was asked (e.g. remote code without --trust-remote-code)."""


@dataclass
class LoadedModel:
    """A model ready for capture.

    ``weights`` says honestly what the weights are: ``"tiny-random(seed=0)"``,
    ``"random-init"``, ``"hub:org/name@revision"`` or ``"local:/path"``. Everything made from a
    model whose weights start with ``tiny-random`` or ``random`` is flagged synthetic in reports.

    ``adapter`` is the :class:`ModelAdapter` that made it (adapters pass ``adapter=self``;
    :func:`medprobe.models.prepare.prepare_model` fills it in for adapters that do not): the
    engine and the tasks call ``loaded.adapter`` and never look the family up again.
    """

    card: ModelCard
    model: Any  # torch.nn.Module, eval mode
    layer_map: LayerMap
    processor: Any = None
    config: Any = None
    weights: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    #: adapter-specific state (image size, token ids, ...)
    extra: dict[str, Any] = field(default_factory=dict)
    adapter: "ModelAdapter | None" = field(default=None, repr=False, compare=False)

    @property
    def is_random(self) -> bool:
        return self.weights.startswith(("tiny-random", "random"))


@dataclass(frozen=True)
class ImageTokens:
    """How many positions one image occupies at each stage, at the card's probing resolution.

    ``image_size``: the side (px) of the square the processor feeds the tower; ``vision``: tokens
    in a vision block's output per image (patches plus ``prefix`` CLS-like tokens); ``connector``:
    tokens the connector outputs per image; ``llm``: image-token positions per image in the
    sequence the LLM receives; ``rule``: the formula, in words, with the settings it used.
    """

    image_size: int
    vision: int
    connector: int
    llm: int
    prefix: int = 0
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size, "vision": self.vision, "prefix": self.prefix,
            "connector": self.connector, "llm": self.llm, "rule": self.rule,
        }


@dataclass
class Batch:
    """Model inputs for a batch of B images plus what the readouts need to pool.

    ``inputs``: keyword arguments of :meth:`ModelAdapter.forward` (tensors on the model device).
    ``roles``: boolean masks of shape (B, T) over the sequence the LLM receives, keyed by role:
    ``image`` (image-token positions), ``text`` (text positions, padding excluded) and ``last``
    (the final input token of each row). Empty for vision-only models.
    ``packed``: for layouts that concatenate all images, stage -> tokens per image (length B);
    e.g. Qwen2.5-VL ``{"vision": [256, 256], "connector": [64, 64]}``.
    """

    inputs: dict[str, Any]
    roles: dict[str, Any] = field(default_factory=dict)
    packed: dict[str, list[int]] = field(default_factory=dict)
    size: int = 0


class ModelAdapter:
    """Base class of family adapters. Subclasses set ``family`` and implement the methods that
    raise ``NotImplementedError``."""

    family: str = ""
    #: bump when a change alters captured features (part of the feature-store run key)
    version: str = "1"
    #: the family's code is not in transformers/timm/open_clip (needs trust_remote_code)
    needs_remote_code: bool = False

    #: the values a card of this family may give as ``loader`` (how its checkpoints are loaded:
    #: ``stock`` transformers classes, ``convert`` after ``medprobe convert``, ``remote-code``, a
    #: library's factory ...); the conformance kit checks every card against it
    loaders: tuple[str, ...] = ("stock",)

    # -- optional capabilities: declared here, never probed with getattr ----------------------
    #: the adapter is a transformers MLLM whose LM head scores candidate answers
    #: (``classify --mode score``: :func:`medprobe.tasks.classify.score_batch`)
    scores_answers: bool = False
    #: implements :meth:`encode_images` (training a classifier on the tower, zero-shot)
    encodes_images: bool = False
    #: implements :meth:`encode_texts` (a contrastive text tower: zero-shot)
    has_text_tower: bool = False
    #: implements :meth:`card_for_name` (``family:NAME`` references make an ad-hoc card)
    names_ad_hoc_models: bool = False
    #: builds its full-size model on the meta device from a published ``config.json``
    #: (:mod:`medprobe.models.meta`): implements :meth:`meta_config`, :meth:`meta_model`,
    #: :meth:`image_tokens` and :meth:`published_processor`
    meta_capable: bool = False

    # -- layer map ---------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        """The compact layer declaration for ``card`` given its (model) config."""
        raise NotImplementedError

    def layer_map(self, card: ModelCard, model: Any, config: Any = None, resolved_against: str = "") -> LayerMap:
        """Resolve :meth:`layer_groups` against ``model.named_modules()``."""
        names = [n for n, _ in model.named_modules()]
        return resolve_layer_map(
            card.id,
            self.layer_groups(card, config if config is not None else getattr(model, "config", None)),
            names,
            config if config is not None else getattr(model, "config", None),
            resolved_against=resolved_against or f"module tree of {type(model).__name__}",
        )

    def recorded_listing(self, card: ModelCard) -> tuple[Iterable[str], Mapping[str, Any], str] | None:
        """For remote-code families: ``(module names, config dict, source)`` recorded from the
        published modeling code, so the layer map can be validated without importing it."""
        return None

    # -- model names -------------------------------------------------------------------------
    def matches_checkpoint(self, config: Mapping[str, Any]) -> bool:
        """Whether a local checkpoint directory whose ``config.json`` is ``config`` is of this
        family (``medprobe --model DIR`` asks every family). Default: no."""
        return False

    # -- full size without weights (capability ``meta_capable``) -------------------------------

    def meta_config(self, card: ModelCard, config: Mapping[str, Any]) -> Any:
        """The library config object (e.g. a ``PretrainedConfig``) for the published
        ``config.json`` dict ``config`` of ``card``, read as ``from_pretrained`` would read it."""
        raise NotImplementedError

    def meta_model(self, card: ModelCard, config: Any) -> Any:
        """The full-size model of the card's class built from ``config`` with parameters on the
        meta device (no memory, no weights)."""
        raise NotImplementedError

    def image_tokens(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> ImageTokens:
        """Image positions per image at each stage for the card's probing resolution, from the
        model config and the published processor settings (``None`` when none were published)."""
        raise NotImplementedError

    def published_processor(self, card: ModelCard, config: Any, processor: Mapping[str, Any] | None) -> Any:
        """A processor whose image side is built from the published processor settings, with the
        family's offline word tokenizer (no download): what :meth:`preprocess` uses to check the
        image-token positions of the real settings."""
        raise NotImplementedError

    # -- loading -----------------------------------------------------------------------------
    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        """A tiny random model of the card's architecture class, built offline and seeded, with a
        processor built in-process. Same seed, same weights."""
        raise NotImplementedError

    def load(
        self,
        card: ModelCard,
        source: str | None = None,
        *,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        device_map: str | None = None,
        trust_remote_code: bool = False,
        **options: Any,
    ) -> LoadedModel:
        """Load real weights from ``source`` (a hub id or a local directory; default the card's
        hub id) through the library's own ``from_pretrained`` / factory."""
        raise NotImplementedError

    # -- inputs and forward ------------------------------------------------------------------
    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        """Turn B RGB PIL images (and the classification prompt, for MLLMs) into a :class:`Batch`."""
        raise NotImplementedError

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        """Run the part of the model that the hooks observe. Never compute full-vocabulary
        logits (call the backbone, or keep one logit position)."""
        raise NotImplementedError

    # -- optional capabilities (implement the method and set its flag) -------------------------
    def encode_images(self, loaded: LoadedModel, batch: Batch) -> Any:
        """(B, D) pooled image embeddings of a preprocessed batch, with gradients when the model is
        trainable (``encodes_images``)."""
        raise NotImplementedError(f"adapter '{self.family}' does not encode images")

    def encode_texts(self, loaded: LoadedModel, texts: Sequence[str]) -> Any:
        """(T, D) text-tower embeddings of T texts (``has_text_tower``)."""
        raise NotImplementedError(f"adapter '{self.family}' has no text tower")

    def card_for_name(self, name: str) -> ModelCard:
        """An ad-hoc card for ``family:NAME`` (``names_ad_hoc_models``): a registry name for timm /
        open_clip (``timm:resnet50.a1_in1k``), a hub id or a local checkpoint directory for the
        Hugging Face families (``llava:ORG/NAME``). Raises :class:`NotFoundError` naming the
        reference when ``name`` is not one this family takes."""
        raise NotImplementedError(f"adapter '{self.family}' takes no free model names")

    def capabilities(self) -> dict[str, bool]:
        return {"scores_answers": self.scores_answers, "encodes_images": self.encodes_images,
                "has_text_tower": self.has_text_tower, "names_ad_hoc_models": self.names_ad_hoc_models,
                "meta_capable": self.meta_capable}

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "version": self.version, "needs_remote_code": self.needs_remote_code,
                **self.capabilities()}
