"""Base adapter for MLLMs whose model class ships with transformers (LLaVA, Qwen-VL, Gemma 3).

:class:`StockMLLMAdapter` implements the parts every stock family shares:

* ``load``: ``getattr(transformers, card.architecture).from_pretrained(...)`` and
  ``AutoProcessor.from_pretrained(...)`` with the arguments of :mod:`medprobe.models.hf.loading`, after
  checking the checkpoint's ``config.json`` ``model_type`` (a wrong layout is refused, never
  loaded with random weights);
* ``build_tiny``: a seeded tiny random model of the card's class plus a processor built
  in-process; ``save_tiny_checkpoint`` writes both as a complete fake checkpoint directory;
* ``preprocess``: images -> the family's processor with the rendered prompt -> a
  :class:`~medprobe.adapter.Batch` with ``image`` / ``text`` / ``last`` token roles;
* ``forward``: the base model (``model.model``) with ``use_cache=False``, never the LM head.

Subclasses supply the family facts: accepted classes and ``model_type`` values, the layer groups,
the tiny config and processor, the image placeholder and image-token id, and any extra model
inputs (Qwen ``mm_token_type_ids`` and packed counts, Gemma ``token_type_ids``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import transformers

from ...adapter import AdapterError, Batch, LoadedModel, ModelAdapter
from ...cards import ModelCard
from ...runtime import resolve_device
from .loading import PretrainedSource, adhoc_card, architectures_of, model_device, pretrained_source, read_config_dict
from .prompting import render_prompt
from .roles import token_roles
from .tiny import seeded, tiny_resolved_against, tiny_weights

#: ``load(**options)`` keys every stock family accepts
COMMON_OPTIONS = ("attn_implementation", "max_memory")


class StockMLLMAdapter(ModelAdapter):
    """Shared implementation; see the module docstring. Subclasses set the class attributes and
    implement the methods that raise ``NotImplementedError``."""

    scores_answers = True

    #: transformers class names this family loads; the first is used when a card names none
    architectures: tuple[str, ...] = ()
    #: ``family:ORG/NAME`` and ``family:DIR`` make ad-hoc cards (:meth:`card_for_name`)
    names_ad_hoc_models = True
    #: ``config.json`` ``model_type`` values this family loads
    model_types: tuple[str, ...] = ()
    #: extra ``load(**options)`` keys of the family (besides :data:`COMMON_OPTIONS`)
    load_options: tuple[str, ...] = ()

    # -- family facts (subclasses) -------------------------------------------------------------
    def tiny_processor(self, card: ModelCard) -> Any:
        """The family's processor with an in-process tokenizer and a small image size."""
        raise NotImplementedError

    def tiny_config(self, card: ModelCard, processor: Any) -> Any:
        """A tiny config of the card's class whose special-token ids match ``processor``'s tokenizer."""
        raise NotImplementedError

    def image_placeholder(self, processor: Any) -> str:
        """What the prompt holds where the image goes (before the processor expands it)."""
        raise NotImplementedError

    def image_token_id(self, config: Any) -> int:
        """The id of the token whose positions receive the projected image features."""
        raise NotImplementedError

    # -- optional family hooks -----------------------------------------------------------------
    def processor_load_kwargs(self, card: ModelCard, options: Mapping[str, Any]) -> dict[str, Any]:
        """Extra keyword arguments for ``AutoProcessor.from_pretrained``."""
        return {}

    def configure_processor(self, card: ModelCard, processor: Any, options: Mapping[str, Any]) -> Any:
        """Adjust the processor loaded by ``AutoProcessor.from_pretrained`` (e.g. a fixed resolution)."""
        return processor

    def loaded_extra(self, card: ModelCard, model: Any, processor: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        """Adapter state kept in ``LoadedModel.extra`` (checked against the loaded model)."""
        return {"image_token_id": self.image_token_id(model.config)}

    def prepare_images(self, loaded: LoadedModel, images: Sequence[Any]) -> list[Any]:
        """RGB PIL images as the processor should receive them."""
        return [_rgb(im, i) for i, im in enumerate(images)]

    def call_processor(self, loaded: LoadedModel, images: list[Any], texts: list[str]) -> dict[str, Any]:
        """Run the processor on B images and B prompt texts (one image per text)."""
        return dict(
            loaded.processor(
                images=images, text=texts, padding=True, return_tensors="pt",
                add_special_tokens=adds_special_tokens(loaded.processor, texts),
            )
        )

    def complete_inputs(self, loaded: LoadedModel, inputs: dict[str, Any]) -> dict[str, Any]:
        """Add model inputs the processor may not return (on the CPU, before the device move)."""
        return inputs

    def packed_counts(self, loaded: LoadedModel, inputs: Mapping[str, Any]) -> dict[str, list[int]]:
        """``Batch.packed`` for families with packed layouts."""
        return {}

    def wrong_model_type(self, card: ModelCard, src: PretrainedSource, model_type: str | None) -> AdapterError:
        """The error for a checkpoint whose ``config.json`` ``model_type`` this family cannot load."""
        return AdapterError(
            f"{_config_where(src)}: model_type '{model_type}' cannot be loaded by family '{self.family}' "
            f"(expects {list(self.model_types)}); check the family and architecture of card '{card.id}'"
        )

    # -- model names ---------------------------------------------------------------------------
    def matches_checkpoint(self, config: Mapping[str, Any]) -> bool:
        """A checkpoint of this family: one of its ``architectures`` or ``model_types``."""
        return bool(set(architectures_of(config)) & set(self.architectures)) or config.get("model_type") in self.model_types

    def checkpoint_settings(self, architecture: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Card settings an ad-hoc card takes from a checkpoint's ``config.json`` (default none)."""
        return {}

    def card_for_name(self, name: str) -> ModelCard:
        """``FAMILY:DIR`` or ``FAMILY:ORG/NAME``: see :func:`medprobe.hf.loading.adhoc_card`."""
        return adhoc_card(
            self.family, name, kind="mllm", architectures=self.architectures, matches=self.matches_checkpoint,
            settings=self.checkpoint_settings,
        )

    # -- classes -------------------------------------------------------------------------------
    def model_class(self, card: ModelCard) -> type:
        """The transformers class named by ``card.architecture`` (checked against the family)."""
        name = card.architecture or self.architectures[0]
        if name not in self.architectures:
            raise AdapterError(
                f"card '{card.id}': architecture '{name}' is not loaded by family '{self.family}' "
                f"(supports {list(self.architectures)})"
            )
        cls = getattr(transformers, name, None)
        if cls is None:
            raise AdapterError(
                f"card '{card.id}': transformers {transformers.__version__} has no class '{name}'; "
                "upgrade transformers (medprobe needs >=5,<6)"
            )
        return cls

    # -- tiny models ---------------------------------------------------------------------------
    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        cls = self.model_class(card)
        processor = self.tiny_processor(card)
        config = self.tiny_config(card, processor)
        with seeded(seed):
            model = cls(config)
        model = model.to(torch.float32).eval()
        layer_map = self.layer_map(card, model, model.config, resolved_against=tiny_resolved_against(cls.__name__, seed))
        return LoadedModel(
            adapter=self,
            card=card,
            model=model,
            layer_map=layer_map,
            processor=processor,
            config=model.config,
            weights=tiny_weights(seed),
            device="cpu",
            dtype="float32",
            extra=self.loaded_extra(card, model, processor, {}),
        )

    def save_tiny_checkpoint(self, card: ModelCard, directory: str | Path, seed: int = 0) -> Path:
        """Write the tiny random model and its processor with ``save_pretrained`` into
        ``directory`` (config.json, model.safetensors, tokenizer and processor files): a complete
        offline checkpoint for exercising :meth:`load`."""
        loaded = self.build_tiny(card, seed=seed)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        loaded.model.save_pretrained(out)
        loaded.processor.save_pretrained(out)
        return out

    # -- real weights --------------------------------------------------------------------------
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
        random_init: bool = False,
        seed: int = 0,
        **options: Any,
    ) -> LoadedModel:
        """``from_pretrained`` of the card's class and ``AutoProcessor`` from ``source`` (default the
        card's hub id). ``random_init``: the random-weights twin: the class is built from the
        checkpoint's config with weights seeded by ``seed`` (:func:`medprobe.models.condition.build_random`)
        and the checkpoint's weights are never read; the processor is the checkpoint's."""
        allowed = (*COMMON_OPTIONS, *self.load_options)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise AdapterError(f"family '{self.family}': unknown load option(s) {unknown}; accepted: {list(allowed)}")
        cls = self.model_class(card)
        device = resolve_device(device)
        src = pretrained_source(
            card, source, revision=revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        raw = read_config_dict(src)
        if raw.get("model_type") not in self.model_types:
            raise self.wrong_model_type(card, src, raw.get("model_type"))
        model_extra = {k: options[k] for k in COMMON_OPTIONS if options.get(k) is not None}
        weights, redrawn = src.weights, []
        try:
            if random_init:
                model, weights, redrawn = self._random_twin(card, cls, src, device, device_map, seed, model_extra)
            else:
                model = cls.from_pretrained(src.location, **src.model_kwargs(device_map, **model_extra))
            processor = transformers.AutoProcessor.from_pretrained(
                src.location, **src.processor_kwargs(**self.processor_load_kwargs(card, options))
            )
        except (OSError, ValueError) as exc:
            raise AdapterError(f"card '{card.id}': cannot load {cls.__name__} from {src.weights}: {exc}") from exc
        processor = self.configure_processor(card, processor, options)
        if device_map is None:
            model = model.to(device)
        model = model.eval()
        layer_map = self.layer_map(
            card, model, model.config, resolved_against=f"module tree of {cls.__name__} loaded from {weights}"
        )
        return LoadedModel(
            adapter=self,
            card=card,
            model=model,
            layer_map=layer_map,
            processor=processor,
            config=model.config,
            weights=weights,
            device=model_device(model),
            dtype=src.dtype_name,
            extra=dict(self.loaded_extra(card, model, processor, options),
                       **({"random_init_redrawn": redrawn} if redrawn else {})),
        )

    def _random_twin(self, card: ModelCard, cls: type, src: PretrainedSource, device: str, device_map: str | None,
                     seed: int, model_extra: Mapping[str, Any]) -> tuple[Any, str, list[str]]:
        """The random-weights twin of ``src``: (model on ``device``, weights label, redrawn zero-init matrices)."""
        from ..condition import build_random, random_init_label
        from ...runtime import torch_dtype

        if device_map not in (None, "", "none"):
            raise AdapterError(
                f"card '{card.id}': --random-init builds the model on one device; drop --device-map {device_map} "
                "(a random twin of a model that needs several GPUs: use --dtype bf16 on one large GPU)"
            )
        config = transformers.AutoConfig.from_pretrained(src.location, **src.processor_kwargs())
        if model_extra.get("attn_implementation"):
            config._attn_implementation = model_extra["attn_implementation"]
        model, redrawn = build_random(cls, config, seed=seed, dtype=torch_dtype(src.dtype_name), device=device)
        return model, random_init_label(seed, src.weights), redrawn

    # -- inputs and forward --------------------------------------------------------------------
    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        """B images + one question -> a :class:`Batch`.

        ``inputs``: the processor output on the model device (``input_ids`` (B, T),
        ``attention_mask`` (B, T), ``pixel_values`` in the model dtype, family extras);
        ``roles``: boolean (B, T) CPU masks ``image`` / ``text`` / ``last``.
        """
        images = list(images)
        if not images:
            raise AdapterError(f"model '{loaded.card.id}': preprocess needs at least one image")
        pil = self.prepare_images(loaded, images)
        text = render_prompt(loaded.card, loaded.processor, prompt, self.image_placeholder(loaded.processor))
        inputs = self.call_processor(loaded, pil, [text] * len(pil))
        image_id = self.image_token_id(loaded.config)
        roles = token_roles(inputs["input_ids"], inputs.get("attention_mask"), image_id)
        no_image = (~roles["image"].any(dim=1)).nonzero().flatten().tolist()
        if no_image:
            raise AdapterError(
                f"model '{loaded.card.id}': rows {no_image} hold no image token (id {image_id}) after processing; "
                "the prompt lost its image placeholder or was truncated"
            )
        inputs = self.complete_inputs(loaded, inputs)
        packed = self.packed_counts(loaded, inputs)
        return Batch(inputs=_to_model(inputs, loaded.model), roles=roles, packed=packed, size=len(pil))

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        """Run the base model (vision tower, connector, LLM decoder; no LM head)."""
        base = getattr(loaded.model, "model", None)
        if base is None:
            raise AdapterError(f"model '{loaded.card.id}': {type(loaded.model).__name__} has no base model at `.model`")
        with torch.inference_mode():
            base(**batch.inputs, use_cache=False)


# -- helpers -----------------------------------------------------------------------------------
def _rgb(image: Any, index: int) -> Any:
    convert = getattr(image, "convert", None)
    if convert is None:
        raise AdapterError(f"image {index} is a {type(image).__name__}, expected a PIL image")
    return image if getattr(image, "mode", None) == "RGB" else convert("RGB")


def _config_where(src: PretrainedSource) -> str:
    return str(Path(src.location) / "config.json") if src.is_local else f"config.json of {src.weights}"


def _to_model(inputs: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Move tensors to the model's first-parameter device; floating tensors take the model dtype."""
    param = next(model.parameters())
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(param.device, dtype=param.dtype) if value.is_floating_point() else value.to(param.device)
        out[key] = value
    return out


def adds_special_tokens(processor: Any, texts: Sequence[str]) -> bool:
    """False when the rendered prompts already start with the BOS token (chat templates and
    card templates often spell it out), so the tokenizer does not add a second one."""
    bos = getattr(getattr(processor, "tokenizer", None), "bos_token", None)
    return not (bos and texts and all(t.startswith(bos) for t in texts))


def config_int(config: Any, *names: str) -> int:
    """The first of ``names`` that ``config`` holds as an int (``image_token_id`` vs
    ``image_token_index`` across versions); ``AdapterError`` naming them all otherwise."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise AdapterError(f"{type(config).__name__} has none of {list(names)}")
