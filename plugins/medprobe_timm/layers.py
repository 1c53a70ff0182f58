"""Derive the layer map of a timm model from the model itself: ``feature_info`` plus one probe.

No per-architecture table: every decision below is read from the instantiated model.

1. **Candidates** come from ``model.feature_info`` (timm's list of ``{module, num_chs, reduction}``).
2. **Probe**: one forward pass of a seeded random (1, 3, H, W) image through ``forward_features``
   and ``forward_head(pre_logits=True)`` with a forward hook on every module. It records each
   candidate's output shape and how often every module ran (a module that runs twice cannot be
   hooked for one feature).
3. **Kind of model**:

   * *isotropic* (ViT, DeiT, MLP-Mixer, ResMLP, gMLP, ConViT, hybrid ViTs): feature_info names
     children ``C.i`` of one container ``C`` at one reduction and every child emits tokens
     (B, T, C) -> every child of ``C`` becomes ``vision.{i:02d}`` (stage ``vision``, layout
     ``NLC``). ``prefix_tokens`` = T minus the patch grid (H/r x W/r), cross-checked with
     ``model.num_prefix_tokens``; it may differ per block (ConViT adds its CLS token after the
     local blocks).
   * *hybrid ViT* (e.g. ``vit_small_r26_s32``): an isotropic model whose patch embedding is a CNN
     with its own feature_info (``patch_embed.backbone``) gets that CNN's stages first, as
     ``stage.{i}`` (stage ``cnn``, ``NCHW``).
   * *hierarchical* (CNNs, and hybrids whose stages change resolution: LeViT, MobileViT, CoAtNet,
     MaxViT, EfficientFormer, ...): one layer per feature_info entry, ``stage.{i}`` (stage
     ``cnn``), with the layout the probe saw: ``NCHW`` feature maps, or ``NLC`` where a stage
     emits tokens (all LeViT stages, EfficientFormer's last stage). Isotropic models whose blocks
     emit feature maps (ConvMixer-like) are treated the same way.

4. **Head**: the module whose output *is* the pooled pre-logits vector (B, C) returned by
   ``forward_head(pre_logits=True)`` (``torch.equal`` on the probe), run exactly once, finishing
   after every feature layer, and whose ``forward`` takes no ``pre_logits`` flag (so its output
   does not depend on how it is called); the last such module wins (``global_pool`` for ResNet, ``head_drop`` for ViT,
   ``head.drop`` for ConvNeXt). Models that pool with a plain tensor op and no module after it
   (LeViT) get no ``head`` layer; the map's notes say so.

5. **Channels-last stages** (Swin emits (B, H, W, C)) are not a medprobe layout. Such a stage gets
   a parameter-free hook point, :class:`ChannelsFirstTap`, kept in ``model.medprobe_taps`` and
   fed by a forward hook of the stage with the stage's output; its own output is the
   (B, C, H, W) view, and the map hooks the tap (``medprobe_taps.<stage>``, layout ``NCHW``).
   The tap holds no weights (``state_dict`` is unchanged) and only permutes a view.
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from medprobe.adapter import AdapterError
from medprobe.layermap import LayerGroup, LayerMap

_CHILD = re.compile(r"^(?P<container>.+)\.(?P<index>\d+)$")
#: the largest CLS/register/distillation prefix accepted when inferring prefix tokens
_MAX_PREFIX = 16


@dataclass(frozen=True)
class ProbedLayer:
    """One layer the probe found: canonical id, module path (relative to the probed module),
    stage, layout, width (channels C) and the output shape seen for a (1, 3, H, W) input."""

    id: str
    path: str
    stage: str
    layout: str
    width: int
    prefix_tokens: int = 0
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class LayerPlan:
    """The layers of one timm model, as derived by :func:`plan_timm_layers`.

    ``kind`` is ``isotropic``, ``hybrid`` or ``hierarchical``; ``input_size`` the (H, W) the
    probe ran at; ``head_path`` the pooled pre-logits module (``None`` when there is none);
    ``output_shape`` the shape of what the probed forward returned (first element of a tuple).
    """

    model: str
    layers: tuple[ProbedLayer, ...]
    input_size: tuple[int, int]
    kind: str
    head_path: str | None = None
    notes: tuple[str, ...] = ()
    output_shape: tuple[int, ...] | None = None

    def groups(self, path_prefix: str = "") -> list[LayerGroup]:
        """One single-module :class:`LayerGroup` per layer (paths prefixed with ``path_prefix``)."""
        return [
            LayerGroup(
                stage=p.stage,
                id_template=p.id,
                candidates=(path_prefix + p.path,),
                repeated=False,
                layout=p.layout,
                width=p.width,
                prefix_tokens=p.prefix_tokens,
            )
            for p in self.layers
        ]


def with_stage_indices(layer_map: LayerMap, notes: Sequence[str] = ()) -> LayerMap:
    """Number each layer by its position within its stage (single-module groups all resolve to
    index 0) and append ``notes``."""
    counters: dict[str, int] = {}
    layers = []
    for spec in layer_map.layers:
        i = counters.get(spec.stage, 0)
        counters[spec.stage] = i + 1
        layers.append(replace(spec, index=i))
    return LayerMap(
        model=layer_map.model,
        layers=tuple(layers),
        resolved_against=layer_map.resolved_against,
        notes=tuple(layer_map.notes) + tuple(notes),
    )


TAPS = "medprobe_taps"


def _unwrap(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) and output else output


class ChannelsFirstTap(nn.Module):
    """Hook point (no parameters): (B, H, W, C) -> (B, C, H, W) view of a stage's output.

    Called only by the forward hook :func:`install_channels_first_tap` puts on the stage, so
    the model's own computation never sees its output.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


def install_channels_first_tap(model: nn.Module, path: str) -> str:
    """Give the channels-last module at ``path`` a :class:`ChannelsFirstTap`; return the tap's
    path (``medprobe_taps.<path with _>``). Idempotent."""
    if not hasattr(model, TAPS):
        model.add_module(TAPS, nn.ModuleDict())
    taps = getattr(model, TAPS)
    key = path.replace(".", "_")
    if key not in taps:
        tap = ChannelsFirstTap()
        taps[key] = tap

        def feed(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tap(_unwrap(output))

        model.get_submodule(path).register_forward_hook(feed)
    return f"{TAPS}.{key}"


def feature_info_of(module: nn.Module, name: str) -> list[dict[str, Any]]:
    """``module.feature_info`` as a list of dicts; :class:`AdapterError` naming ``name`` if absent."""
    info = getattr(module, "feature_info", None)
    if info is None:
        raise AdapterError(f"timm model '{name}' ({type(module).__name__}) has no feature_info; its layers cannot be derived")
    if hasattr(info, "get_dicts"):  # timm FeatureInfo (features_only models)
        info = info.get_dicts()
    out = [dict(d) for d in info if isinstance(d, Mapping) and d.get("module")]
    if not out:
        raise AdapterError(f"timm model '{name}' ({type(module).__name__}) has an empty feature_info")
    return out


@dataclass
class _Probe:
    """What one hooked forward pass saw."""

    shapes: dict[str, tuple[int, ...]]
    calls: dict[str, int]
    #: module name -> position of its (last) completion in the forward pass
    finished: dict[str, int]
    #: (module name, output) for every (B, C) output, in completion order
    vectors: list[tuple[str, torch.Tensor]]
    result: Any


def _input_placement(root: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the first parameter and the floating dtype holding most parameters (mixed
    precision towers keep a few fp32 embeddings next to bf16 weights)."""
    counts: dict[torch.dtype, int] = {}
    device = torch.device("cpu")
    for i, p in enumerate(root.parameters()):
        if i == 0:
            device = p.device
        if p.is_floating_point():
            counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return device, (max(counts, key=counts.__getitem__) if counts else torch.float32)


def probe_forward(
    root: nn.Module,
    watch: Sequence[str],
    run: Callable[[torch.Tensor], Any],
    input_size: tuple[int, int],
    *,
    collect_vectors: bool = False,
    seed: int = 0,
) -> _Probe:
    """Run ``run(x)`` once on a seeded random (1, 3, H, W) image with hooks on every module of
    ``root``; record output shapes of the ``watch`` paths, per-module call counts and, with
    ``collect_vectors``, every 2-D output in completion order."""
    device, dtype = _input_placement(root)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *input_size, generator=gen).to(device=device, dtype=dtype)
    watched = set(watch)
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    finished: dict[str, int] = {}
    tick = itertools.count()
    vectors: list[tuple[str, torch.Tensor]] = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            finished[name] = next(tick)
            out = _unwrap(output)
            if not isinstance(out, torch.Tensor):
                return
            if name in watched:
                shapes[name] = tuple(out.shape)
            if collect_vectors and out.ndim == 2 and out.shape[0] == 1:
                vectors.append((name, out))

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in root.named_modules() if n]
    was_training = root.training
    root.eval()
    try:
        with torch.no_grad():
            result = run(x)
    finally:
        for h in handles:
            h.remove()
        root.train(was_training)
    return _Probe(shapes=shapes, calls=calls, finished=finished, vectors=vectors, result=result)


def _grids(input_size: tuple[int, int], reduction: int | float | None) -> set[int]:
    """Token counts a (H/r) x (W/r) grid can have (floor or ceil division)."""
    if not reduction:
        return set()
    h, w = input_size
    hs = {h // int(reduction), math.ceil(h / reduction)}
    ws = {w // int(reduction), math.ceil(w / reduction)}
    return {a * b for a in hs for b in ws}


def _layout_of(model: str, path: str, shape: tuple[int, ...], num_chs: int | None) -> tuple[str, int]:
    """Layout and width of a hook output of ``shape`` (``NHWC`` for channels-last maps, which the
    caller taps); shapes whose channel axis cannot be told, and odd ranks, are refused."""
    if len(shape) == 4:
        if num_chs is None or shape[1] == num_chs:
            return "NCHW", shape[1]
        if shape[-1] == num_chs:
            return "NHWC", shape[-1]
        raise AdapterError(
            f"timm model '{model}': layer '{path}' outputs {shape} but feature_info says {num_chs} channels; "
            f"cannot tell the channel axis"
        )
    if len(shape) == 3:
        return "NLC", shape[-1]
    if len(shape) == 2:
        return "NC", shape[-1]
    raise AdapterError(f"timm model '{model}': layer '{path}' outputs a rank-{len(shape)} tensor {shape}; expected 2-4 dims")


def _prefix_tokens(model: str, path: str, tokens: int, grids: set[int], declared: int | None) -> int:
    """CLS/register tokens in front of a (B, T, C) sequence: T minus the patch grid."""
    if declared is not None and tokens - declared in grids:
        return declared
    if tokens in grids:
        return 0
    fits = sorted(tokens - g for g in grids if 0 < tokens - g <= _MAX_PREFIX)
    if len(fits) == 1:
        return fits[0]
    raise AdapterError(
        f"timm model '{model}': layer '{path}' emits {tokens} tokens, which fits no patch grid {sorted(grids)} "
        f"plus num_prefix_tokens={declared}; cannot tell prefix tokens from patch tokens"
    )


def _isotropic_container(model: nn.Module, info: list[dict[str, Any]]) -> str | None:
    """The container ``C`` when feature_info names children ``C.i`` of one container at one reduction."""
    matches = [_CHILD.match(d["module"]) for d in info]
    if not all(matches):
        return None
    containers = {m.group("container") for m in matches}  # type: ignore[union-attr]
    if len(containers) != 1 or len({d.get("reduction") for d in info}) != 1:
        return None
    container = containers.pop()
    try:
        holder = model.get_submodule(container)
    except AttributeError:
        return None
    if not isinstance(holder, (nn.Sequential, nn.ModuleList)):
        return None
    return container


def _head_path(model: nn.Module, probe: _Probe, after: Sequence[str]) -> str | None:
    """The last module, run once and finishing after every ``after`` layer, whose output equals
    the pre-logits vector exactly and whose forward has no ``pre_logits`` flag."""
    ref = probe.result
    if not isinstance(ref, torch.Tensor) or ref.ndim != 2:
        return None
    modules = dict(model.named_modules())
    features_done = max((probe.finished.get(p, -1) for p in after), default=-1)
    for name, out in reversed(probe.vectors):
        if probe.calls.get(name) != 1 or probe.finished.get(name, -1) <= features_done:
            continue
        if out.shape != ref.shape or not torch.equal(out, ref):
            continue
        try:
            params = inspect.signature(type(modules[name]).forward).parameters
        except (TypeError, ValueError):
            params = {}
        if "pre_logits" in params:
            continue
        return name
    return None


def default_run(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    """The feature path medprobe runs: ``forward_head(forward_features(x), pre_logits=True)``."""

    def run(x: torch.Tensor) -> Any:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return run


def plan_timm_layers(
    model: nn.Module,
    input_size: tuple[int, int],
    *,
    name: str,
    run: Callable[[torch.Tensor], Any] | None = None,
    probe_root: nn.Module | None = None,
    with_head: bool = True,
) -> LayerPlan:
    """Derive the layers of timm ``model`` (see the module docstring for the rules).

    Args:
        model: a timm model (eval mode is set during the probe and restored after).
        input_size: (H, W) of the images the model will see.
        name: the timm name, used in messages.
        run: the forward to probe, ``x (1, 3, H, W) -> anything``; default
            ``forward_head(forward_features(x), pre_logits=True)``. Wrappers (open_clip's
            ``TimmModel``) pass their own forward and ``probe_root`` (the module it runs on).
        with_head: look for the pooled pre-logits module (only meaningful with the default run).

    Paths in the plan are relative to ``model``.
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    info = feature_info_of(model, name)
    container = _isotropic_container(model, info)
    notes: list[str] = []

    backbone_info: list[dict[str, Any]] = []
    if container is not None:
        n_blocks = len(model.get_submodule(container))
        main = [{"module": f"{container}.{i}", "num_chs": info[0].get("num_chs"), "reduction": info[0].get("reduction")} for i in range(n_blocks)]
        backbone = getattr(getattr(model, "patch_embed", None), "backbone", None)
        if backbone is not None and getattr(backbone, "feature_info", None) is not None:
            backbone_info = [
                dict(d, module=f"patch_embed.backbone.{d['module']}") for d in feature_info_of(backbone, f"{name} patch_embed.backbone")
            ]
    else:
        main = info
    watch = [d["module"] for d in backbone_info + main]

    root = probe_root if probe_root is not None else model
    offset = ""
    if root is not model:
        if with_head:
            raise ValueError("plan_timm_layers: with_head needs the default run on the model itself (probe_root=None)")
        found = [n for n, m in root.named_modules() if m is model and n]
        if not found:
            raise ValueError(f"plan_timm_layers: timm model '{name}' is not a submodule of probe_root {type(root).__name__}")
        offset = found[0] + "."
    probe = probe_forward(
        root,
        [offset + p for p in watch],
        run or default_run(model),
        input_size,
        collect_vectors=with_head,
    )

    def seen(path: str) -> tuple[tuple[int, ...] | None, int]:
        return probe.shapes.get(offset + path), probe.calls.get(offset + path, 0)

    for d in main:
        shape, n = seen(d["module"])
        if n != 1 or shape is None:
            raise AdapterError(
                f"timm model '{name}': feature layer '{d['module']}' ran {n} times in one forward pass "
                f"(must run exactly once to be hooked)"
            )
    declared = getattr(model, "num_prefix_tokens", None)
    tokens_everywhere = all(len(seen(d["module"])[0] or ()) == 3 for d in main)

    layers: list[ProbedLayer] = []
    if container is not None and tokens_everywhere:
        kind = "hybrid" if backbone_info else "isotropic"
        for d in backbone_info:
            shape, n = seen(d["module"])
            if n != 1 or shape is None:
                notes.append(f"backbone feature '{d['module']}' ran {n} times in the forward pass; not mapped")
                continue
            layout, width = _layout_of(name, d["module"], shape, d.get("num_chs"))
            path = d["module"]
            if layout == "NHWC":
                path = install_channels_first_tap(model, path)
                layout, shape = "NCHW", (shape[0], shape[3], shape[1], shape[2])
            layers.append(ProbedLayer(f"stage.{len(layers)}", path, "cnn", layout, width, 0, shape))
        for i, d in enumerate(main):
            shape, _ = seen(d["module"])
            assert shape is not None
            prefix = _prefix_tokens(name, d["module"], shape[1], _grids(input_size, d.get("reduction")), declared)
            layers.append(ProbedLayer(f"vision.{i:02d}", d["module"], "vision", "NLC", shape[-1], prefix, shape))
        if backbone_info:
            notes.append("hybrid ViT: the patch-embedding CNN's feature_info stages come first as stage.N (cnn)")
    else:
        kind = "hierarchical"
        channels_last: list[str] = []
        for i, d in enumerate(main):
            shape, _ = seen(d["module"])
            assert shape is not None
            layout, width = _layout_of(name, d["module"], shape, d.get("num_chs"))
            path = d["module"]
            if layout == "NHWC":
                path = install_channels_first_tap(model, path)
                layout, shape = "NCHW", (shape[0], shape[3], shape[1], shape[2])
                channels_last.append(d["module"])
            prefix = 0
            if layout == "NLC":
                prefix = _prefix_tokens(name, d["module"], shape[1], _grids(input_size, d.get("reduction")), declared)
            if d.get("num_chs") is not None and width != d["num_chs"]:
                notes.append(f"{d['module']}: feature_info says {d['num_chs']} channels, the probe saw {width}")
            layers.append(ProbedLayer(f"stage.{i}", path, "cnn", layout, width, prefix, shape))
        if channels_last:
            notes.append(f"channels-last stages {channels_last} are hooked through ChannelsFirstTap modules in '{TAPS}'")
        if any(p.layout == "NLC" for p in layers):
            notes.append("stages that emit tokens are mapped with layout NLC (stage 'cnn' = hierarchical feature_info stage)")

    head = None
    if with_head:
        head = _head_path(model, probe, after=watch)
        if head is not None:
            ref = probe.result
            layers.append(ProbedLayer("head", head, "head", "NC", int(ref.shape[-1]), 0, tuple(ref.shape)))
            notes.append(f"head = '{head}': the pooled pre-logits vector of forward_head(pre_logits=True)")
        else:
            notes.append("no head layer: the pre-logits vector is not the output of any module that runs once (tensor-op pooling)")
    notes.insert(0, f"derived from feature_info + a {input_size[0]}x{input_size[1]} probe ({kind})")
    result = _unwrap(probe.result)
    return LayerPlan(
        model=name,
        layers=tuple(layers),
        input_size=input_size,
        kind=kind,
        head_path=head,
        notes=tuple(notes),
        output_shape=tuple(result.shape) if isinstance(result, torch.Tensor) else None,
    )
