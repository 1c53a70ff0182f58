"""Backbones: B RGB images -> pooled (B, D) float32 features, differentiable, for the classifier head.

Two kinds, one interface (:class:`Backbone`: ``inputs(images)``, ``features(inputs)``,
``select_trainable(images)``, ``checkpoint_state()``, ``load_checkpoint_state(state)``):

* :class:`EncoderBackbone` (recipes ``finetune`` and ``linear``): a baseline family whose adapter
  has ``encode_images(loaded, batch)`` (timm: pooled pre-logits; open_clip / hf_clip: the image
  embedding). Inputs are the adapter's own ``preprocess``.
* :class:`VisionTowerBackbone` (recipe ``vision-tower``): an MLLM's vision encoder, run alone and
  cut at the layer that feeds the connector (``feeds_connector`` in the MLLM's layer map; LLaVA
  feeds from block -2, so its last block is never run). The model's ``get_image_features`` is
  called on image-processor inputs (no prompt) and a forward hook on the feeding layer takes its
  output and ends the pass (nothing after it runs: no later block, no connector, no LLM). The
  output is mean-pooled over its image tokens: ``(B, T, C)`` tokens without the CLS/prefix tokens,
  ``packed`` tokens per image (Qwen-VL), or ``(B, C, H, W)`` maps over H, W.

Which parameters train is found, not declared: :meth:`Backbone.select_trainable` runs one image
forward and backward and keeps exactly the parameters that received a gradient (open_clip: the
image tower, never the text tower; vision-tower: the blocks up to the feeding layer); every other
parameter is frozen (``requires_grad=False``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ...adapter import Batch, LoadedModel
from ...layermap import LayerSpec
from ...runtime import torch_dtype
from .record import TrainError

#: image-processor outputs the vision towers take (Qwen-VL needs the patch grid)
VISION_INPUT_KEYS = ("pixel_values", "image_grid_thw")


class _StopForward(Exception):
    """Raised from the feeding layer's hook to end the vision pass early (never escapes)."""


class Backbone:
    """What the training loop needs from a model; see the module docstring."""

    loaded: LoadedModel
    #: "encoder" or "vision-tower"
    kind: str = ""
    #: the layer whose pooled output the head reads (``None``: the adapter's embedding)
    layer: LayerSpec | None = None

    def __init__(self, loaded: LoadedModel, adapter: Any):
        self.loaded = loaded
        self.adapter = adapter
        self.trainable: dict[str, nn.Parameter] = {}

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    def inputs(self, images: Sequence[Any]) -> Any:
        """Model inputs for B RGB PIL images, on the model's device."""
        raise NotImplementedError

    def features(self, inputs: Any) -> torch.Tensor:
        """(B, D) float32 pooled features; gradients flow when enabled."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "layer": self.layer.id if self.layer else None}

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    # -- what trains -------------------------------------------------------------------------
    def select_trainable(self, images: Sequence[Any]) -> dict[str, nn.Parameter]:
        """Keep the parameters that get a gradient from one forward/backward on ``images``
        (eval mode, so BatchNorm statistics are untouched); freeze the others."""
        model = self.model
        was_training = model.training
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad():
            out = self.features(self.inputs(images))
            out.float().sum().backward()
        names = {id(p): n for n, p in model.named_parameters()}
        chosen = {names[id(p)]: p for p in model.parameters() if p.grad is not None}
        keep = {id(q) for q in chosen.values()}
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(id(p) in keep)
        model.train(was_training)
        if not chosen:
            raise TrainError(f"model '{self.loaded.card.id}': no parameter receives a gradient from the pooled features")
        self.trainable = chosen
        return chosen

    def freeze(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.trainable = {}

    # -- checkpoint --------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """CPU copies of the tensors the checkpoint stores (see the subclasses)."""
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        raise NotImplementedError


class EncoderBackbone(Backbone):
    """A baseline's ``encode_images`` (timm, open_clip, hf_clip)."""

    kind = "encoder"

    def __init__(self, loaded: LoadedModel, adapter: Any):
        super().__init__(loaded, adapter)
        if not adapter.encodes_images:
            raise TrainError(
                f"model '{loaded.card.id}': family '{loaded.card.family}' has no encode_images(); the finetune and "
                "linear recipes need a baseline family whose adapter declares encodes_images"
            )

    def inputs(self, images: Sequence[Any]) -> Batch:
        return self.adapter.preprocess(self.loaded, list(images))

    def features(self, inputs: Batch) -> torch.Tensor:
        out = self.adapter.encode_images(self.loaded, inputs)
        if out.dim() != 2:
            raise TrainError(f"model '{self.loaded.card.id}': encode_images returned {tuple(out.shape)}, expected (B, D)")
        return out.float()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The model's full ``state_dict`` (buffers such as BatchNorm statistics included)."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.model.state_dict().items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        result = self.model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise TrainError(
                f"{source}: does not fit model '{self.loaded.card.id}': missing {list(result.missing_keys)[:10]}, "
                f"unexpected {list(result.unexpected_keys)[:10]}"
            )


def feeding_layer(loaded: LoadedModel, layer_id: str | None = None) -> LayerSpec:
    """The vision layer the head reads: ``layer_id`` if given, else the one that feeds the
    connector, else the last vision layer."""
    lmap = loaded.layer_map
    if layer_id:
        try:
            spec = lmap[layer_id]
        except KeyError:
            raise TrainError(f"model '{loaded.card.id}': no layer '{layer_id}'; vision layers: {[s.id for s in lmap.stage('vision')]}") from None
        if spec.stage != "vision":
            raise TrainError(f"model '{loaded.card.id}': layer '{layer_id}' is in stage '{spec.stage}', not a vision-tower layer")
        return spec
    vision = lmap.stage("vision")
    if not vision:
        raise TrainError(f"model '{loaded.card.id}': its layer map has no vision layers")
    fed = [s for s in vision if s.feeds_connector]
    return fed[0] if fed else vision[-1]


def pool_tokens(layer: LayerSpec, x: torch.Tensor, packed: Sequence[int] | None) -> torch.Tensor:
    """Mean over a layer's image tokens -> (B, C) float32, differentiable.

    ``NLC`` (B, T, C): tokens after ``prefix_tokens``; ``packed`` (sum_T, C): per image, split by
    ``packed``; ``NCHW`` (B, C, H, W): over H, W; ``NC`` (B, C): as is.
    """
    if layer.layout == "NLC" and x.dim() == 3:
        return x[:, layer.prefix_tokens :].float().mean(dim=1)
    if layer.layout == "packed" and x.dim() == 2 and packed is not None:
        if sum(packed) != x.shape[0]:
            raise TrainError(f"layer '{layer.id}': per-image token counts {list(packed)} do not sum to {x.shape[0]}")
        return torch.stack([chunk.float().mean(dim=0) for chunk in torch.split(x, list(packed))])
    if layer.layout == "NCHW" and x.dim() == 4:
        return x.float().mean(dim=(2, 3))
    if layer.layout == "NC" and x.dim() == 2:
        return x.float()
    raise TrainError(f"layer '{layer.id}' ({layer.layout}) gave a tensor of shape {tuple(x.shape)} that cannot be pooled")


class VisionInputs:
    """Vision-tower inputs of one batch: ``kwargs`` for ``get_image_features`` and, for packed
    layouts, the tokens per image."""

    def __init__(self, kwargs: dict[str, Any], packed: list[int] | None, size: int):
        self.kwargs = kwargs
        self.packed = packed
        self.size = size


class VisionTowerBackbone(Backbone):
    """An MLLM's vision tower up to its feeding layer, mean-pooled (see the module docstring)."""

    kind = "vision-tower"

    def __init__(self, loaded: LoadedModel, adapter: Any, layer_id: str | None = None):
        super().__init__(loaded, adapter)
        if loaded.card.kind != "mllm":
            raise TrainError(f"model '{loaded.card.id}' is a {loaded.card.kind}; the vision-tower recipe takes an MLLM card")
        self.layer = feeding_layer(loaded, layer_id)
        self.module = self.model.get_submodule(self.layer.path)
        self.get_image_features = getattr(self.model, "get_image_features", None)
        if self.get_image_features is None:
            base = getattr(self.model, "model", None)
            self.get_image_features = getattr(base, "get_image_features", None)
        if self.get_image_features is None:
            raise TrainError(
                f"model '{loaded.card.id}': {type(self.model).__name__} has no get_image_features(); the vision-tower "
                "recipe runs the vision encoder through it"
            )
        self.image_processor = getattr(loaded.processor, "image_processor", None)
        if self.image_processor is None:
            raise TrainError(f"model '{loaded.card.id}': its processor has no image_processor")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layer_path": self.layer.path, "layout": self.layer.layout,
                "prefix_tokens_dropped": self.layer.prefix_tokens, "pooling": "mean over image tokens"}

    def _vision_dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch_dtype(self.loaded.dtype)

    def inputs(self, images: Sequence[Any]) -> VisionInputs:
        prepare = getattr(self.adapter, "prepare_images", None)
        pil = prepare(self.loaded, list(images)) if callable(prepare) else [im.convert("RGB") for im in images]
        out = self.image_processor(images=pil, return_tensors="pt")
        kwargs = {k: out[k] for k in VISION_INPUT_KEYS if k in out}
        if "pixel_values" not in kwargs:
            raise TrainError(f"model '{self.loaded.card.id}': the image processor returned no pixel_values")
        packed = None
        if self.layer.layout == "packed":
            counts = getattr(self.adapter, "packed_counts", None)
            packed = (counts(self.loaded, out) if callable(counts) else {}).get("vision")
            if packed is None:
                raise TrainError(f"model '{self.loaded.card.id}': packed vision layer '{self.layer.id}' needs per-image token counts")
        device = next(self.module.parameters()).device
        dtype = self._vision_dtype()
        moved = {}
        for k, v in kwargs.items():
            moved[k] = v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)
        return VisionInputs(moved, packed, len(pil))

    def features(self, inputs: VisionInputs) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module: Any, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)
            raise _StopForward

        handle = self.module.register_forward_hook(hook)
        try:
            self.get_image_features(**inputs.kwargs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise TrainError(
                f"model '{self.loaded.card.id}': layer '{self.layer.id}' ({self.layer.path}) did not run in get_image_features"
            )
        return pool_tokens(self.layer, captured[0], inputs.packed)

    def select_trainable(self, images: Sequence[Any]) -> dict[str, nn.Parameter]:
        """As the base class; then the smallest module holding every trainable parameter (the
        vision tower) is cast to float32 when the model was loaded in a lower precision, so the
        optimizer updates float32 weights."""
        chosen = super().select_trainable(images)
        prefix = _common_module([n for n in chosen])
        root = self.model.get_submodule(prefix) if prefix else self.model
        if any(p.dtype != torch.float32 for p in root.parameters()):
            root.float()
            self.trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.trainable_root = prefix
        return self.trainable

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The trainable vision-tower parameters, named as in the full MLLM."""
        return {k: p.detach().to("cpu", copy=True).contiguous() for k, p in self.trainable.items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        params = dict(self.model.named_parameters())
        unknown = sorted(set(state) - set(params))
        if unknown:
            raise TrainError(f"{source}: parameters not in model '{self.loaded.card.id}': {unknown[:10]}")
        bad = [k for k, v in state.items() if tuple(v.shape) != tuple(params[k].shape)]
        if bad:
            raise TrainError(f"{source}: shape mismatch with model '{self.loaded.card.id}': {bad[:10]}")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v.to(params[k].device, params[k].dtype))


def _common_module(names: Sequence[str]) -> str:
    """The longest dotted module path that prefixes every parameter name ("" for the root)."""
    parts = [n.split(".")[:-1] for n in names]
    if not parts:
        return ""
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)
