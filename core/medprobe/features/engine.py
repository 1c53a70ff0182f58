"""The extraction engine: batches of a plan -> hooks -> pooled features -> shards.

One loop serves ``extract``, data-parallel extraction (:mod:`.distributed`) and ``classify``'s
in-pass capture::

    buffer = ShardBuffer(lambda arrays, batches: writer.write_shard(arrays))
    capture_batches(plan, loaded, ds, batches, buffer)      # batches: [(b, lo, hi), ...]
    buffer.flush()

:func:`batch_features` runs one batch through an open :class:`~.capture.Capture`;
:class:`ShardBuffer` collects whole batches and hands a shard (``BATCHES_PER_SHARD`` batches) to
its sink, so every writer sees the same shard boundaries and a resumed run is bit-identical.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..adapter import LoadedModel

#: rows per shard, in whole batches
BATCHES_PER_SHARD = 8

#: one batch: (batch number, first row, row after the last)
BatchRows = tuple[int, int, int]


def batch_features(plan: Any, loaded: LoadedModel, ds: Any, cap: Any, chunk: Sequence[Any]) -> dict[tuple[str, str], np.ndarray]:
    """Features of one batch of samples: (layer id, readout) -> (B, D) float32, through the open
    :class:`~medprobe.features.capture.Capture` ``cap``. Non-finite features raise a CaptureError naming
    the model, layers and samples; any other failure of the adapter's preprocessing or forward pass
    a CaptureError naming the model, adapter, dtype and the selected layers it failed between."""
    from ..registry import MedprobeError
    from .capture import CaptureError, ForwardError, NonFiniteFeatures

    adapter = loaded.adapter
    images = [ds.load_image(s) for s in chunk]
    dtype = plan.manifest["dtype"]
    try:
        batch = adapter.preprocess(loaded, images, plan.question)
    except MedprobeError:
        raise
    except Exception as exc:
        raise CaptureError(
            f"model '{loaded.card.id}' (adapter '{adapter.family}'): preprocessing samples {[s.id for s in chunk]} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    except ForwardError as exc:
        hint = (f"the adapter's forward may not cast its inputs to {dtype}: rerun with --dtype fp32, or cast the "
                f"inputs in adapter '{adapter.family}'" if dtype != "float32"
                else f"check adapter '{adapter.family}' (plugin) against this model")
        raise CaptureError(
            f"model '{loaded.card.id}' (adapter '{adapter.family}', dtype {dtype}, device {plan.manifest['device']}): "
            f"forward pass failed {exc.where}: {exc.cause}; {hint}"
        ) from exc.__cause__
    except NonFiniteFeatures as exc:
        where = "; ".join(
            f"{lid}/{ro}: samples {[chunk[i].id for i in rows]}" for (lid, ro), rows in exc.rows.items()
        )
        raise CaptureError(
            f"model '{loaded.card.id}' ({plan.manifest['dtype']}): non-finite features in {where}; "
            f"rerun with --dtype bf16 or --dtype fp32 (completed shards are kept in {plan.run_dir})"
        ) from None
    return {k: v.numpy() for k, v in feats.items()}


class ShardBuffer:
    """Features of whole batches until a shard is full, then handed to ``sink(arrays, batches)``.

    ``arrays``: (layer id, readout) -> (rows, D) float32, the batches concatenated in the order they
    were added; ``batches``: their :data:`BatchRows`. A shard is handed over after
    ``batches_per_shard`` batches, and by :meth:`flush` (call it after the last batch).
    """

    def __init__(self, sink: Callable[[dict[tuple[str, str], np.ndarray], list[BatchRows]], None],
                 batches_per_shard: int = BATCHES_PER_SHARD):
        self.sink = sink
        self.batches_per_shard = batches_per_shard
        self._parts: dict[tuple[str, str], list[np.ndarray]] = {}
        self._batches: list[BatchRows] = []

    def add(self, features: dict[tuple[str, str], np.ndarray], batch: BatchRows) -> None:
        for key, value in features.items():
            self._parts.setdefault(key, []).append(value)
        self._batches.append(batch)
        if len(self._batches) >= self.batches_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self._batches:
            return
        arrays = {k: np.concatenate(v, axis=0) for k, v in self._parts.items()}
        batches = list(self._batches)
        self._parts, self._batches = {}, []
        self.sink(arrays, batches)


def capture_batches(
    plan: Any,
    loaded: LoadedModel,
    ds: Any,
    batches: Iterable[BatchRows],
    buffer: ShardBuffer,
    *,
    bar: Any = None,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Run every batch of ``plan`` (a :class:`~.plan.ExtractPlan`) listed in ``batches`` through the
    model with the plan's hooks, adding its features to ``buffer``; ``bar.update(rows)`` and
    ``on_batch(b)`` after each batch. The caller flushes ``buffer``."""
    from .capture import Capture

    with Capture(loaded.model, plan.selected, plan.readouts, stop_early=True, model_name=loaded.card.id) as cap:
        for b, lo, hi in batches:
            buffer.add(batch_features(plan, loaded, ds, cap, plan.samples[lo:hi]), (b, lo, hi))
            if bar is not None:
                bar.update(hi - lo)
            if on_batch is not None:
                on_batch(b)


__all__ = ["BATCHES_PER_SHARD", "BatchRows", "batch_features", "ShardBuffer", "capture_batches"]
