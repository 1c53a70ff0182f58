"""Run-time facts: device and dtype resolution, package versions, git hash.

Importing this module imports no torch; the functions that need it import it themselves.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

from .registry import MedprobeError

DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda:0`` when a GPU is visible, else ``cpu``; other values pass through checked."""
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MedprobeError(f"device '{device}' requested but no CUDA device is visible; use --device cpu")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> str:
    """``auto`` -> bfloat16 on a bf16-capable GPU, float32 otherwise. Returns a torch dtype name."""
    if dtype == "auto":
        if device.startswith("cuda"):
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    if dtype not in DTYPES:
        raise MedprobeError(f"unknown dtype '{dtype}'; choose auto, bf16, fp16 or fp32")
    return DTYPES[dtype]


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES.get(name, name))


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("medprobe", "torch", "transformers", "timm", "open_clip_torch", "safetensors", "numpy", "scikit-learn"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def git_hash() -> str | None:
    """The commit of the medprobe source tree when it is a git checkout (editable installs)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
