"""The ``timm`` adapter: any timm image model (CNN, ViT, MLP-Mixer, hybrid) as a probed baseline.

Card fields read: ``settings.timm_name`` (full pretrained tag, e.g. ``resnet50.a1_in1k``; falls
back to ``architecture``) and ``settings.image_size`` (square input side; default: the tag's
``pretrained_cfg.input_size``). Free names work as ad-hoc cards: ``timm:resnet50.a1_in1k``.

* **Layer map**: derived from the instantiated model (``feature_info`` + one probe forward); the
  rules are in :mod:`medprobe_timm.layers`. ``LoadedModel.config`` is the timm data config
  (``input_size``, mean/std, crop) the probe and the preprocessing use.
* **Tiny model**: ``timm.create_model(name, pretrained=False, num_classes=0)`` of the *same*
  architecture, seeded, at 64 px when the architecture runs there (``img_size=64`` for
  fixed-size ViT-like models; CNNs take any size), else at its default size.
* **Weights**: ``weights=PATH`` (safetensors or ``torch.load(weights_only=True)`` checkpoint,
  file or folder; bad keys are named), ``random_init=True``, or the tag's hub weights through
  timm. Offline (``HF_HUB_OFFLINE=1``) without cached weights, or a failed download, raises
  :class:`AdapterError` saying to pass ``--weights PATH`` or ``--random-init``: never a silent
  random model.
* **Forward**: ``forward_features`` then, when the map has a ``head``, ``forward_head(...,
  pre_logits=True)``; the classifier never runs (the model has none: ``num_classes=0``).
* **encode_images**: the same pooled (B, D) vector with gradients (for ``medprobe train``).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import timm
import torch
from timm.data import create_transform, resolve_model_data_config
from timm.models import get_pretrained_cfg, split_model_name_tag

from medprobe.adapter import AdapterError, Batch, LoadedModel, ModelAdapter
from medprobe.cards import ModelCard
from medprobe.models.hf.loading import hub_access, looks_like_path, missing_directory_error
from medprobe.models.hf.tiny import seeded, tiny_resolved_against, tiny_weights
from medprobe.layermap import LayerGroup, LayerMap
from medprobe.registry import NotFoundError
from medprobe.runtime import resolve_dtype, torch_dtype

from .layers import LayerPlan, plan_timm_layers, with_stage_indices
from .weights import find_weight_file, fit_state_dict, read_state_dict

FIX_HINT = "pass --weights PATH (a local .safetensors/.pth file or folder) or --random-init"


def rgb_image(image: Any, model: str) -> Any:
    """``image`` as an RGB PIL image; :class:`AdapterError` naming ``model`` for anything else."""
    if not hasattr(image, "convert") or not hasattr(image, "mode"):
        raise AdapterError(f"model '{model}': preprocess expects PIL images, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def _unknown(arch: str) -> str:
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    return f"'{arch}' is not a timm architecture" + (f"; did you mean: {', '.join(close)}?" if close else "")


class TimmAdapter(ModelAdapter):
    """timm image classifiers; see the module docstring."""

    family = "timm"
    loaders = ("timm",)
    encodes_images = True
    names_ad_hoc_models = True
    version = "1"
    #: side of the square input tiny models try first
    tiny_image_size = 64

    # -- names and cards ---------------------------------------------------------------------
    def card_for_name(self, name: str) -> ModelCard:
        """An ad-hoc card for ``timm:NAME`` (``NAME`` = architecture or ``architecture.tag``)."""
        if name.startswith(("hf-hub:", "local-dir:")):
            raise NotFoundError(f"timm:{name}: hub/local model names are not supported; use a timm registry name (timm.list_models())")
        arch, tag = split_model_name_tag(name)
        if not timm.is_model(arch):
            raise NotFoundError(f"timm:{name}: {_unknown(arch)}")
        if tag and name not in timm.list_pretrained(name):
            tags = timm.list_pretrained(f"{arch}.*")
            raise NotFoundError(f"timm:{name}: timm has no pretrained tag '{tag}' for '{arch}'; tags: {tags}")
        pcfg = get_pretrained_cfg(name)
        settings: dict[str, Any] = {"timm_name": name}
        if pcfg is not None and pcfg.input_size:
            settings["image_size"] = int(pcfg.input_size[-1])
        return ModelCard(
            id=f"timm:{name}",
            kind="baseline",
            family=self.family,
            title=name,
            hub_id=getattr(pcfg, "hf_hub_id", None),
            architecture=arch,
            loader="timm",
            license=getattr(pcfg, "license", None),
            settings=settings,
            notes="ad-hoc card made from the timm registry",
        )

    def timm_name(self, card: ModelCard) -> str:
        name = card.setting("timm_name") or card.architecture
        if not name:
            raise AdapterError(f"card '{card.id}': a timm card needs settings.timm_name or architecture")
        return self._checked(str(name), f"card '{card.id}'")

    @staticmethod
    def _checked(name: str, where: str) -> str:
        """``name`` if its architecture is in the timm registry, else an AdapterError with close names."""
        arch = split_model_name_tag(name)[0]
        if not timm.is_model(arch):
            raise AdapterError(f"{where}: {_unknown(arch)}")
        return name

    # -- layer map ---------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        """The groups of a :class:`LayerPlan` (timm maps are derived from the instantiated model,
        so ``config`` must be the plan :meth:`layer_map` builds)."""
        if not isinstance(config, LayerPlan):
            raise AdapterError(
                f"card '{card.id}': timm layer maps are derived from an instantiated model; call layer_map(card, model)"
            )
        return config.groups()

    def layer_map(self, card: ModelCard, model: Any, config: Any = None, resolved_against: str = "") -> LayerMap:
        """Derive the map from ``model``; ``config`` is the timm data config (its ``input_size``
        is the probe size; default: the model's pretrained_cfg)."""
        data_cfg = dict(config) if isinstance(config, Mapping) else resolve_model_data_config(model)
        size = tuple(int(v) for v in data_cfg["input_size"][-2:])
        plan = plan_timm_layers(model, size, name=self.timm_name(card))
        lmap = super().layer_map(card, model, config=plan, resolved_against=resolved_against or f"timm {plan.model}")
        return with_stage_indices(lmap, plan.notes)

    # -- building and loading ----------------------------------------------------------------
    def _size_plan(self, name: str, size: int | Sequence[int] | None) -> tuple[dict[str, Any], tuple[int, int]]:
        """(create_model kwargs, (H, W)) for an input of ``size`` (``None``: the default size)."""
        pcfg = get_pretrained_cfg(name)
        default = tuple(int(v) for v in (pcfg.input_size[-2:] if pcfg is not None and pcfg.input_size else (224, 224)))
        if size is None:
            return {}, default  # type: ignore[return-value]
        hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        fixed = bool(pcfg is not None and pcfg.fixed_input_size)
        return ({"img_size": hw} if fixed and hw != default else {}), hw

    @staticmethod
    def _data_config(model: Any, hw: tuple[int, int]) -> dict[str, Any]:
        cfg = dict(resolve_model_data_config(model))
        cfg["input_size"] = (3, hw[0], hw[1])
        return cfg

    def _finish(
        self,
        card: ModelCard,
        name: str,
        model: Any,
        hw: tuple[int, int],
        *,
        weights: str,
        device: str,
        dtype_name: str,
        resolved_against: str,
        extra: dict[str, Any],
    ) -> LoadedModel:
        model = model.to(device=device, dtype=torch_dtype(dtype_name)).eval()
        data_cfg = self._data_config(model, hw)
        lmap = self.layer_map(card, model, data_cfg, resolved_against=resolved_against)
        transform = create_transform(**data_cfg, is_training=False)
        head = next((s.path for s in lmap if s.stage == "head"), None)
        return LoadedModel(
            adapter=self,
            card=card,
            model=model,
            layer_map=lmap,
            processor=transform,
            config=data_cfg,
            weights=weights,
            device=device,
            dtype=dtype_name,
            extra={"image_size": hw, "timm_name": name, "head_path": head, **extra},
        )

    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        """The card's architecture with random seeded weights, at 64 px when it runs there."""
        name = self.timm_name(card)
        failures = []
        for size in (self.tiny_image_size, None):
            kwargs, hw = self._size_plan(name, size)
            try:
                with seeded(seed):
                    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
                return self._finish(
                    card,
                    name,
                    model,
                    hw,
                    weights=tiny_weights(seed),
                    device="cpu",
                    dtype_name="float32",
                    resolved_against=tiny_resolved_against(f"timm {name} at {hw[0]}x{hw[1]}", seed),
                    extra={"size_fallback": failures[:]} if failures else {},
                )
            except AdapterError:
                raise
            except Exception as exc:  # this size does not fit the architecture: try its default size
                failures.append(f"{hw[0]}x{hw[1]}: {type(exc).__name__}: {exc}")
        raise AdapterError(f"card '{card.id}': cannot build timm model '{name}' offline: " + "; ".join(failures))

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
        image_size: int | None = None,
        seed: int = 0,
        **options: Any,
    ) -> LoadedModel:
        """Build the card's model with real (or explicitly random) weights.

        ``source``: a local weight file/folder (same as ``weights``) or another timm name.
        ``weights``: local file or folder. ``random_init``: random weights (seeded by ``seed``).
        Otherwise the tag's pretrained weights through timm (``revision`` pins the hub commit).
        ``image_size`` overrides ``settings.image_size``. ``device_map`` is not supported.
        """
        if device_map not in (None, "", "none"):
            raise AdapterError(f"card '{card.id}': timm models load on one device; device_map={device_map!r} is not supported")
        name = self.timm_name(card)
        if source and not Path(source).expanduser().exists():
            if looks_like_path(str(source)):
                raise missing_directory_error(str(source))
            name = self._checked(str(source), f"card '{card.id}' source")
        elif source and weights is None:
            weights = source
        size = image_size or card.setting("image_size")
        kwargs, hw = self._size_plan(name, size)
        dtype_name = resolve_dtype(dtype, device)
        extra: dict[str, Any] = {"ignored_options": sorted(options)} if options else {}

        def create(pretrained: bool, **more: Any) -> Any:
            try:
                return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs, **more)
            except TypeError as exc:
                if "img_size" in kwargs:
                    raise AdapterError(f"timm model '{name}' has a fixed input size and takes no img_size; drop image_size={size}") from exc
                raise

        if weights is not None:
            path = find_weight_file(weights)
            model = create(False)
            report = fit_state_dict(model, read_state_dict(path), name=name, source=str(path))
            extra["load_report"] = {"dropped_classifier_keys": report.dropped, "converted_by_filter": report.filtered}
            label = f"local:{path}"
        elif random_init:
            with seeded(seed):
                model = create(False)
            label = "random-init"
        else:
            model, label = self._from_hub(card, name, revision, create)
        return self._finish(
            card, name, model, hw, weights=label, device=device, dtype_name=dtype_name,
            resolved_against=f"timm {name} ({label}) at {hw[0]}x{hw[1]}", extra=extra,
        )

    def _from_hub(self, card: ModelCard, name: str, revision: str | None, create: Any) -> tuple[Any, str]:
        """Pretrained weights through timm; an AdapterError with the fix when they cannot be had."""
        pcfg = get_pretrained_cfg(name)
        hub_id = getattr(pcfg, "hf_hub_id", None)
        url = getattr(pcfg, "url", None)
        if pcfg is None or not (hub_id or url or getattr(pcfg, "file", None)):
            raise AdapterError(f"card '{card.id}': timm knows no pretrained weights for '{name}'; {FIX_HINT}")
        where = f"hub:{hub_id}@{revision or 'main'}" if hub_id else f"url:{url}"
        if hub_id:  # cache first; offline or unreachable hub: one clear message, no retries
            hub_access(f"card '{card.id}' (timm model '{name}')", hub_id, revision, self._filenames(pcfg), fix=FIX_HINT)
        overlay = {"hf_hub_id": f"{hub_id}@{revision}"} if (hub_id and revision) else None
        try:
            model = create(True, **({"pretrained_cfg_overlay": overlay} if overlay else {}))
        except AdapterError:
            raise
        except Exception as exc:
            raise AdapterError(
                f"card '{card.id}': could not load the pretrained weights of timm model '{name}' ({where}): "
                f"{type(exc).__name__}: {exc}. Offline? {FIX_HINT}"
            ) from exc
        return model, where

    @staticmethod
    def _filenames(pcfg: Any) -> tuple[str, ...]:
        """The weight files timm would download for ``pcfg``."""
        name = getattr(pcfg, "hf_hub_filename", None)
        return (name,) if name else ("model.safetensors", "pytorch_model.bin")

    # -- inputs and forward ------------------------------------------------------------------
    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        """B images -> ``pixel_values`` (B, 3, H, W) through the model's timm eval transform
        (resize, center crop, normalise with the tag's mean/std), on the model's device/dtype."""
        if not images:
            raise AdapterError(f"model '{loaded.card.id}': preprocess got no images")
        x = torch.stack([loaded.processor(rgb_image(img, loaded.card.id)) for img in images])
        x = x.to(device=loaded.device, dtype=torch_dtype(loaded.dtype))
        return Batch(inputs={"pixel_values": x}, size=len(images))

    def encode_images(self, loaded: LoadedModel, batch: Batch) -> torch.Tensor:
        """The pooled pre-logits vector (B, D) of ``batch`` (``forward_head(pre_logits=True)``),
        differentiable: training (``medprobe train``) calls it with gradients enabled."""
        model = loaded.model
        return model.forward_head(model.forward_features(batch.inputs["pixel_values"]), pre_logits=True)

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        """``forward_features`` (every stage/block hook fires) and, when the map has a head,
        ``forward_head(pre_logits=True)`` (the (B, C) pooled vector)."""
        model = loaded.model
        with torch.no_grad():
            feats = model.forward_features(batch.inputs["pixel_values"])
            if loaded.extra.get("head_path"):
                model.forward_head(feats, pre_logits=True)
