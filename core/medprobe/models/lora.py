"""LoRA adapters on a loaded model: the paper's before/after condition.

:func:`apply_lora` puts a saved peft LoRA adapter on a loaded model so the same model can be probed
before and after fine-tuning (``medprobe extract --lora DIR``; ``--adapter`` is the older spelling).
Training the adapter is the ``finetune`` task (:mod:`medprobe.tasks.finetune`).

An adapter's identity (:func:`lora_identity`: absolute path, sha256 of ``adapter_model.safetensors``,
its ``adapter_config.json``, merged or not) is part of the feature-store run key of every run
extracted with it.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..adapter import LoadedModel
from ..registry import MedprobeError, read_json_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: the fine-tuning record ``medprobe finetune`` writes beside the adapter (read for ``trained_on``)
RECORD = "medprobe_finetune.json"


class LoraError(MedprobeError):
    """Fine-tuning or applying an adapter failed; the message names the model and directory."""


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide transformers' FutureWarning about ``is_gradient_checkpointing``, which peft triggers
    on every wrap (third-party noise, not actionable by medprobe users)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


# -- applying an adapter -----------------------------------------------------------------------
def lora_identity(directory: str | Path, merged: bool = False) -> dict[str, Any]:
    """What identifies an adapter in run keys and manifests: ``path`` (absolute), ``sha256`` of
    ``adapter_model.safetensors``, ``config`` (its ``adapter_config.json``), ``merged``, and
    ``trained_on`` (card id and weights from ``medprobe_finetune.json``, when present)."""
    from ..features.store import sha256_file

    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise LoraError(f"{path}: adapter directory not found")
    config_file, weights_file = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not config_file.is_file():
        raise LoraError(f"{path}: no {ADAPTER_CONFIG} (not a peft adapter directory)")
    if not weights_file.is_file():
        raise LoraError(
            f"{path}: no {ADAPTER_WEIGHTS}; only safetensors adapters are accepted "
            "(re-save the adapter with save_pretrained(..., safe_serialization=True))"
        )
    config = read_json_object(config_file, ADAPTER_CONFIG, LoraError)
    trained_on = None
    if (path / RECORD).is_file():
        try:
            record = json.loads((path / RECORD).read_text(encoding="utf-8"))
            trained_on = {"id": record["model"]["id"], "weights": record["model"]["weights"]}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise LoraError(f"{path / RECORD}: unreadable fine-tuning record: {exc}") from None
    return {"path": str(path), "sha256": sha256_file(weights_file), "config": config, "merged": bool(merged),
            "trained_on": trained_on}


def apply_lora(loaded: LoadedModel, directory: str | Path, merge: bool = False) -> LoadedModel:
    """``loaded`` with the peft adapter in ``directory`` applied (LoRA layers injected into
    ``loaded.model`` in place; with ``merge`` folded into the base weights instead).

    The returned model is the unwrapped transformers model (not the ``PeftModel``), so every
    layer-map path keeps its name and hooks sit on the same modules. Its ``extra["adapter_lora"]``
    holds :func:`lora_identity`. An adapter trained (per ``medprobe_finetune.json``) for another
    card raises; one trained on other weights of the same card warns.
    """
    import peft

    identity = lora_identity(directory, merged=merge)
    trained_on = identity["trained_on"]
    if trained_on is not None and trained_on["id"] != loaded.card.id:
        raise LoraError(
            f"{identity['path']}: adapter was trained for model '{trained_on['id']}', not '{loaded.card.id}'"
        )
    if trained_on is not None and trained_on["weights"] != loaded.weights:
        warnings.warn(
            f"{identity['path']}: adapter was trained on weights {trained_on['weights']}, applied to {loaded.weights}",
            stacklevel=2,
        )
    if "adapter_lora" in loaded.extra:
        raise LoraError(f"model '{loaded.card.id}' already carries adapter {loaded.extra['adapter_lora']['path']}")
    try:
        with quiet_peft():
            peft_model = peft.PeftModel.from_pretrained(loaded.model, identity["path"], is_trainable=False)
    except Exception as exc:
        raise LoraError(
            f"{identity['path']}: cannot apply the adapter to model '{loaded.card.id}' ({loaded.weights}): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    model = peft_model.merge_and_unload() if merge else peft_model.base_model.model
    model.eval()
    names = {n for n, _ in model.named_modules()}
    lost = [s.path for s in loaded.layer_map if s.path not in names]
    if lost:
        raise LoraError(f"model '{loaded.card.id}': layer paths {lost[:5]} vanished after applying {identity['path']}")
    return dataclasses.replace(loaded, model=model, extra={**loaded.extra, "adapter_lora": identity})
