"""Local weight files for timm models: find, read safely, fit to the model, report by key name.

* :func:`find_weight_file` picks the checkpoint in a file or folder (``model.safetensors``,
  ``pytorch_model.bin``, or the only ``*.safetensors`` / ``*.pth`` / ``*.pt`` / ``*.bin`` /
  ``*.ckpt`` there).
* :func:`read_state_dict` reads safetensors with :mod:`safetensors`, anything else with
  ``torch.load(..., weights_only=True)``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``
  wrappers and a DistributedDataParallel ``module.`` prefix.
* :func:`fit_state_dict` compares the file's keys and shapes with the model's, retries through
  the architecture's own ``checkpoint_filter_fn`` (original-format checkpoints, position
  embeddings at another resolution), tolerates only classifier keys (``pretrained_cfg
  ["classifier"]``; the model is built without a classifier) and missing BatchNorm
  ``num_batches_tracked`` counters, and raises :class:`~medprobe.adapter.AdapterError` naming
  every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from medprobe.adapter import AdapterError

PREFERRED_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model")
#: keys listed per category in error messages
_SHOW = 20


def find_weight_file(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or the one weight file in a folder."""
    p = Path(path).expanduser()
    if p.is_file():
        return p.resolve()
    if not p.is_dir():
        raise AdapterError(f"{p}: weights path does not exist")
    for name in PREFERRED_FILES:
        if (p / name).is_file():
            return (p / name).resolve()
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0].resolve()
    if not found:
        raise AdapterError(f"{p}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) in this folder")
    raise AdapterError(f"{p}: several weight files, pass one of them: {[f.name for f in found]}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (CPU), unwrapped; errors name the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise AdapterError(f"{path}: not a readable safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise AdapterError(
                f"{path}: torch.load(weights_only=True) refused this file (it pickles objects other than tensors); "
                f"re-save its state_dict as safetensors: {exc}"
            ) from exc
        except Exception as exc:
            raise AdapterError(f"{path}: cannot read checkpoint: {type(exc).__name__}: {exc}") from exc
    for _ in range(3):  # {"state_dict": {...}}, {"model": {...}}, possibly nested
        if not isinstance(state, Mapping):
            break
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping):
        raise AdapterError(f"{path}: expected a mapping of parameter names to tensors, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise AdapterError(f"{path}: entries that are not tensors: {bad[:_SHOW]}")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


@dataclass
class FitReport:
    """How a state dict fits a model. ``dropped`` are tolerated classifier keys."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    filtered: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        parts = []
        for label, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected), ("shape mismatches", self.mismatched)):
            if keys:
                more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
                parts.append(f"{label} ({len(keys)}): {keys[:_SHOW]}{more}")
        return "; ".join(parts)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cls = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return (cls,) if isinstance(cls, str) else tuple(cls)


def _compare(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], classifier: tuple[str, ...]) -> FitReport:
    def is_cls(key: str) -> bool:
        return any(key == c or key.startswith(c + ".") for c in classifier)

    rep = FitReport()
    for k in model_state:
        # BatchNorm's step counter is not a weight; older checkpoints omit it
        if k not in state and not is_cls(k) and not k.endswith("num_batches_tracked"):
            rep.missing.append(k)
    for k, v in state.items():
        if k not in model_state:
            (rep.dropped if is_cls(k) else rep.unexpected).append(k)
        elif tuple(v.shape) != tuple(model_state[k].shape):
            entry = f"{k}: file {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
            (rep.dropped if is_cls(k) else rep.mismatched).append(entry)
    return rep


def _filter_fn(model: nn.Module) -> Any:
    try:
        return getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    except ImportError:
        return None


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, name: str, source: str) -> FitReport:
    """Load ``state`` into ``model`` in place, or raise :class:`AdapterError` naming the bad keys.

    ``name`` (the timm model) and ``source`` (the file) appear in the message.
    """
    model_state = model.state_dict()
    classifier = _classifier_prefixes(model)
    report = _compare(model_state, state, classifier)
    if not report.ok:
        filt = _filter_fn(model)
        if filt is not None:
            try:
                converted = filt(dict(state), model)
            except Exception:  # the filter does not understand this file: report the original mismatch
                converted = None
            if isinstance(converted, Mapping):
                retry = _compare(model_state, converted, classifier)
                if retry.ok:
                    state, report = converted, retry
                    report.filtered = True
    if not report.ok:
        raise AdapterError(f"{source}: weights do not fit timm model '{name}': {report.describe()}")
    keep = {k: v for k, v in state.items() if k in model_state and tuple(v.shape) == tuple(model_state[k].shape)}
    model.load_state_dict(keep, strict=False)
    return report
