"""What one grid job asks of the machine: GPUs, CPUs, memory, wall time; size strings.

Sizes are written ``"64GB"`` (powers of 1000), ``"60GiB"`` (powers of 1024) or a bare number of
GB; times as minutes (``90``), ``"90m"``, ``"2h"`` or ``"HH:MM:SS"``. What an extraction needs
(feature-store bytes, GPU memory of one batch) is estimated here from a full-size model on the
meta device (:mod:`medprobe.models.meta`). Imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from ..registry import MedprobeError

_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


class ResourceError(MedprobeError):
    """A resource value cannot be read; the message names where it was given."""


def parse_size(value: Any, where: str = "size") -> int:
    """``"64GB"`` / ``"60GiB"`` / ``"512MB"`` / a number of GB -> bytes."""
    if isinstance(value, bool):
        raise ResourceError(f"{where}: expected a size like '64GB', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ResourceError(f"{where}: size must not be negative, got {value!r}")
        return int(value * 10**9)
    m = _SIZE.match(str(value))
    if not m or m.group(2).upper() not in _UNITS:
        raise ResourceError(f"{where}: cannot read size {value!r}; write e.g. '64GB', '60GiB' or '512MB'")
    unit = m.group(2).upper() or "GB"  # a bare number means GB, as in TOML integers
    return int(float(m.group(1)) * _UNITS[unit])


def parse_minutes(value: Any, where: str = "time") -> int:
    """Minutes from ``90``, ``"90m"``, ``"2h"``, ``"1-00:00:00"`` or ``"HH:MM:SS"``."""
    if isinstance(value, bool):
        raise ResourceError(f"{where}: expected minutes or 'HH:MM:SS', got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ResourceError(f"{where}: time must be positive, got {value!r}")
        return int(value)
    text = str(value).strip()
    m = re.fullmatch(r"([0-9]+)\s*([mh])", text)
    if m:
        return int(m.group(1)) * (60 if m.group(2) == "h" else 1)
    m = re.fullmatch(r"(?:([0-9]+)-)?([0-9]+):([0-9]{2})(?::([0-9]{2}))?", text)
    if m:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        return max(1, days * 1440 + hours * 60 + minutes + (1 if seconds else 0))
    raise ResourceError(f"{where}: cannot read time {value!r}; write minutes (90), '2h' or 'HH:MM:SS'")


def format_size(n: int | None) -> str:
    """Bytes as a short human string (``"12.4 MiB"``); ``"?"`` for unknown."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def parse_max_memory(items: Sequence[str] | Mapping[str, Any], where: str = "--max-memory") -> dict[Any, str]:
    """``["0=70GiB", "1=70GiB", "cpu=200GiB"]`` (or a mapping) -> the ``max_memory`` dict of
    ``from_pretrained(device_map=...)``: GPU indices as ints, ``cpu``/``disk`` as strings."""
    pairs = items.items() if isinstance(items, Mapping) else [_split_pair(x, where) for x in items]
    out: dict[Any, str] = {}
    for key, size in pairs:
        key = str(key).strip()
        parse_size(size, f"{where} {key}")  # validate
        if key.isdigit():
            out[int(key)] = str(size)
        elif key in ("cpu", "disk"):
            out[key] = str(size)
        else:
            raise ResourceError(f"{where}: device {key!r} must be a GPU index, 'cpu' or 'disk'")
    return out


def _split_pair(item: str, where: str) -> tuple[str, str]:
    key, sep, size = str(item).partition("=")
    if not sep:
        raise ResourceError(f"{where}: expected DEVICE=SIZE (e.g. 0=70GiB), got {item!r}")
    return key, size.strip()


@dataclass(frozen=True)
class Resources:
    """One job's request: ``gpus`` per job, ``cpus``, ``memory`` in bytes (``None``: no request),
    ``time_min`` wall-clock limit in minutes (Slurm ``--time``)."""

    gpus: int = 0
    cpus: int = 1
    memory: int | None = None
    time_min: int = 240

    FIELDS = ("gpus", "cpus", "memory", "time")

    def updated(self, data: Mapping[str, Any], where: str) -> "Resources":
        """A copy with the keys of ``data`` (a TOML table) applied; errors name ``where``."""
        if not isinstance(data, Mapping):
            raise ResourceError(f"{where}: must be a table like {{ gpus = 1, memory = \"64GB\" }}")
        unknown = sorted(set(data) - set(self.FIELDS))
        if unknown:
            raise ResourceError(f"{where}: unknown key(s) {unknown}; known: {list(self.FIELDS)}")
        values = asdict(self)
        for key in ("gpus", "cpus"):
            if key in data:
                v = data[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "gpus" else 1):
                    raise ResourceError(f"{where}.{key}: expected an integer >= {0 if key == 'gpus' else 1}, got {v!r}")
                values[key] = v
        if "memory" in data:
            values["memory"] = parse_size(data["memory"], f"{where}.memory")
        if "time" in data:
            values["time_min"] = parse_minutes(data["time"], f"{where}.time")
        return Resources(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"{self.gpus} GPU" if self.gpus else "CPU", f"{self.cpus} cpu"]
        if self.memory:
            parts.append(f"{self.memory / 10**9:g} GB")
        return ", ".join(parts)


# -- what an extraction needs -------------------------------------------------------------------
#: bytes per element of the dtypes a model runs in
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "float64": 8}
#: captured readouts are stored as float32
FEATURE_BYTES = 4


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of ``dtype`` (``"bfloat16"`` -> 2); an unknown name raises naming it."""
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPE_BYTES:
        raise ResourceError(f"dtype {dtype!r}: unknown; use one of {sorted(set(_DTYPE_BYTES))}")
    return _DTYPE_BYTES[key]


def feature_store_bytes(n: int, per_layer: Sequence[tuple[int | None, int]]) -> int | None:
    """Size of a run's feature files: ``n`` samples x sum over layers of (width x readouts) x 4
    bytes. ``per_layer``: ``(width, number of readouts captured there)``; ``None`` when a layer
    declares no width."""
    total = 0
    for width, count in per_layer:
        if width is None:
            return None
        total += int(width) * int(count)
    return int(n) * total * FEATURE_BYTES


def extraction_memory_bytes(
    *,
    parameters: int,
    dtype: str,
    batch_size: int,
    blocks: Sequence[tuple[int, int, int]],
    per_layer: Sequence[tuple[int | None, int]],
) -> dict[str, int]:
    """GPU memory of one extraction batch (an estimate from shapes, not a measurement).

    ``weights`` = parameters x dtype bytes. ``activations`` = batch x the largest, over the hooked
    blocks ``(tokens per row, width, widest linear output)``, of tokens x (3 x width + 2 x widest)
    x dtype bytes: the residual stream, the normalised input and the block output, plus the two
    widest MLP intermediates (gate and up), alive at once inside one block; attention is assumed
    fused (SDPA / flash: no tokens x tokens score matrix) and no full-vocabulary logits are made.
    ``features`` = batch x sum over layers of (width x readouts) x 4 bytes of readouts held before
    they are written. ``total`` is their sum.
    """
    if batch_size < 1:
        raise ResourceError(f"batch size must be >= 1, got {batch_size}")
    b = dtype_bytes(dtype)
    weights = int(parameters) * b
    peak = max((t * (3 * w + 2 * max(wide, w)) for t, w, wide in blocks), default=0)
    activations = batch_size * peak * b
    features = batch_size * sum(int(w or 0) * int(c) for w, c in per_layer) * FEATURE_BYTES
    return {
        "weights_bytes": weights, "activation_bytes": activations, "feature_buffer_bytes": features,
        "gpu_bytes": weights + activations + features,
    }


def format_count(n: int) -> str:
    """A parameter count as a short string: ``8.29B``, ``676.6M``, ``12.3K``."""
    for unit, scale in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}" if unit == "B" else f"{n / scale:.1f}{unit}"
    return str(n)


def stage_tokens(meta: Any, text_tokens: int) -> dict[str, int]:
    """Tokens per image row seen by each stage: vision blocks, connector output, LLM layers
    (image positions plus ``text_tokens`` prompt positions)."""
    it = meta.image_tokens
    return {"vision": it.vision, "connector": it.connector, "llm": it.llm + text_tokens}


def extraction_estimate(
    meta: Any,
    *,
    n: int | None,
    dtype: str = "bfloat16",
    batch_size: int = 8,
    layers: str | Sequence[str] | None = None,
    readouts: str | Sequence[str] | None = None,
    text_tokens: int = 64,
) -> dict[str, Any]:
    """Feature-store size for ``n`` samples and the GPU memory one extraction batch needs.

    ``meta``: a :class:`medprobe.models.meta.MetaModel`. See :func:`extraction_memory_bytes` for
    the memory formula; the feature-store size is :func:`feature_store_bytes` over the selected
    layers and the readouts that apply to each. Estimates from shapes, not measurements.
    """
    from ..models.meta import widest_linear
    from ..features.readouts import applicable, parse_readouts

    chosen = meta.layer_map.select(layers)
    wanted = parse_readouts(readouts)
    per_layer = [(s.width, len(applicable(s, wanted))) for s in chosen]
    tokens = stage_tokens(meta, text_tokens)
    blocks = []
    for s in chosen:
        module = meta.model.get_submodule(s.path)
        blocks.append((tokens.get(s.stage, tokens["llm"]), int(s.width or 0), widest_linear(module)))
    memory = extraction_memory_bytes(
        parameters=meta.parameters, dtype=dtype, batch_size=batch_size, blocks=blocks, per_layer=per_layer,
    )
    return {
        "samples": n,
        "layers": len(chosen),
        "readouts": list(wanted),
        "dtype": dtype,
        "dtype_bytes": dtype_bytes(dtype),
        "batch_size": batch_size,
        "text_tokens_assumed": text_tokens,
        "feature_store_bytes": feature_store_bytes(n, per_layer) if n is not None else None,
        **memory,
    }
