"""Capture: forward hooks that pool every requested layer in one forward pass.

``Capture`` is a context manager (in the spirit of baukit's ``Trace``) and this docstring is its
manual::

    from medprobe.features.capture import Capture

    loaded = adapter.build_tiny(card)                      # a LoadedModel
    layers = loaded.layer_map.select("vision.*,connector,llm.*")
    with Capture(loaded.model, layers, readouts=("image-mean", "last-token")) as cap:
        batch = adapter.preprocess(loaded, images, prompt)
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    feats[("llm.03", "image-mean")]                        # (B, D) float32 tensor on CPU

What it guarantees:

* hooks sit only on the selected layers' modules (``register_forward_hook``), and are removed on
  exit, also after an error;
* each hook unwraps tuple outputs (``o[0]``; transformers 4.x returns tuples where 5.x returns
  tensors) and reduces the activation with :func:`medprobe.features.readouts.reduce` **inside the hook**
  (fp32, CPU, cloned), so no (B, T, C) tensor outlives its layer;
* the forward pass is stopped (a private exception raised from the hook of the deepest selected
  layer) as soon as nothing more is needed: asking for vision layers only never runs the LLM;
* a hook that fires twice in one batch, a layer that never fired, a shape that does not fit its
  layout, and NaN/Inf values raise :class:`CaptureError` naming the model and the layer;
* any other exception of the forward pass (e.g. a dtype mismatch in an adapter that does not cast
  its inputs) becomes :class:`ForwardError` naming the model and the selected layers it failed
  between (the original exception is chained).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..adapter import Batch
from ..layermap import LayerSpec
from .readouts import applicable, reduce
from ..registry import MedprobeError


class CaptureError(MedprobeError):
    """Capture failed; the message names the model and the layer."""


class NonFiniteFeatures(CaptureError):
    """NaN/Inf in captured features. ``rows`` maps (layer id, readout) -> batch row indices."""

    def __init__(self, model: str, rows: dict[tuple[str, str], list[int]]):
        self.model = model
        self.rows = rows
        where = "; ".join(f"{lid}/{ro}: rows {r}" for (lid, ro), r in rows.items())
        super().__init__(
            f"model '{model}': non-finite values (NaN/Inf) in {where}. fp16 overflow in LLM layers is common: "
            f"rerun with --dtype bf16 or --dtype fp32"
        )


class ForwardError(CaptureError):
    """The model's forward pass raised (not a medprobe error): ``where`` says between which
    selected layers, ``cause`` is the original ``"Type: message"``."""

    def __init__(self, model: str, where: str, cause: str):
        self.model, self.where, self.cause = model, where, cause
        super().__init__(f"model '{model}': forward pass failed {where}: {cause}")


class _StopForward(Exception):
    """Raised from the deepest hook to end the forward pass early (never escapes ``run``)."""


def _unwrap(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    for attr in ("last_hidden_state", "hidden_states"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"hook output of type {type(output).__name__} holds no tensor")


class Capture:
    """Hook ``layers`` of ``model``; see the module docstring for the manual.

    Args:
        model: the ``torch.nn.Module`` whose ``named_modules()`` hold every ``layer.path``.
        layers: the layers to capture, in model order (``LayerMap.select(...)``).
        readouts: readout names (``medprobe.features.readouts.READOUTS``); each layer keeps the applicable ones.
        stop_early: end the forward after the deepest selected layer.
        model_name: used in error messages.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Sequence[LayerSpec],
        readouts: Sequence[str] = ("image-mean",),
        stop_early: bool = True,
        model_name: str = "model",
    ) -> None:
        self.model = model
        self.layers = list(layers)
        self.readouts = tuple(readouts)
        self.stop_early = stop_early
        self.model_name = model_name
        self._handles: list[Any] = []
        self._batch: Batch | None = None
        self._features: dict[tuple[str, str], torch.Tensor] = {}
        self._fired: set[str] = set()
        self._error: BaseException | None = None
        if not self.layers:
            raise CaptureError(f"model '{model_name}': no layers selected")
        self.last_layer = self.layers[-1].id

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> "Capture":
        modules = dict(self.model.named_modules())
        missing = [s for s in self.layers if s.path not in modules]
        if missing:
            raise CaptureError(
                f"model '{self.model_name}': layer(s) {[f'{s.id} ({s.path})' for s in missing]} not found in the module tree"
            )
        try:
            for spec in self.layers:
                self._handles.append(modules[spec.path].register_forward_hook(self._make_hook(spec)))
        except Exception:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- hooks ---------------------------------------------------------------------------------
    def _make_hook(self, spec: LayerSpec) -> Callable[..., None]:
        names = applicable(spec, self.readouts)

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if self._batch is None:  # the model ran outside Capture.run: ignore
                return
            if spec.id in self._fired:
                self._error = CaptureError(
                    f"model '{self.model_name}': layer '{spec.id}' ({spec.path}) ran twice in one forward pass; "
                    "hook a module that runs once per batch"
                )
                raise _StopForward
            self._fired.add(spec.id)
            try:
                x = _unwrap(output)
                packed = self._batch.packed.get(spec.stage) if spec.layout == "packed" else None
                reduced = reduce(spec, x, names, roles=self._batch.roles, packed=packed)
            except Exception as exc:  # keep the layer name with the error
                self._error = CaptureError(f"model '{self.model_name}': layer '{spec.id}' ({spec.path}): {exc}")
                raise _StopForward from exc
            for name, value in reduced.items():
                self._features[(spec.id, name)] = value
            if self.stop_early and spec.id == self.last_layer:
                raise _StopForward

        return hook

    def _where(self) -> str:
        """Between which selected layers the forward pass is (from the layers that fired)."""
        fired = [s for s in self.layers if s.id in self._fired]
        pending = [s for s in self.layers if s.id not in self._fired]
        if not fired:
            return f"before the first selected layer '{pending[0].id}' ({pending[0].path}) ran"
        if not pending:
            return f"after the last selected layer '{fired[-1].id}' ({fired[-1].path})"
        return f"after layer '{fired[-1].id}', before layer '{pending[0].id}' ({pending[0].path})"

    # -- one batch -----------------------------------------------------------------------------
    def run(self, batch: Batch, forward: Callable[[], Any]) -> dict[tuple[str, str], torch.Tensor]:
        """Run ``forward()`` (which feeds ``batch`` to the model) and return the pooled features:
        (layer id, readout) -> (B, D) float32 CPU tensors."""
        if not self._handles:
            raise CaptureError("Capture.run called outside the `with Capture(...)` block")
        self._batch, self._features, self._fired, self._error = batch, {}, set(), None
        try:
            with torch.inference_mode():
                forward()
        except _StopForward:
            pass
        except MedprobeError:
            raise
        except Exception as exc:  # the adapter's / model's own failure: name where it happened
            if self._error is not None:
                raise self._error from exc
            raise ForwardError(self.model_name, self._where(), f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._batch = None
        if self._error is not None:
            raise self._error
        never = [s.id for s in self.layers if s.id not in self._fired]
        if never:
            raise CaptureError(f"model '{self.model_name}': layer(s) {never} never ran in the forward pass")
        bad: dict[tuple[str, str], list[int]] = {}
        for key, value in self._features.items():
            finite = torch.isfinite(value).all(dim=1)
            if not bool(finite.all()):
                bad[key] = (~finite).nonzero().flatten().tolist()
        if bad:
            raise NonFiniteFeatures(self.model_name, bad)
        return self._features
