"""The ``finetune`` task: LoRA supervised fine-tuning of an MLLM, the paper's before/after condition.

:func:`finetune` runs LoRA supervised fine-tuning (peft) of an MLLM on the classification
prompt; :func:`medprobe.models.lora.apply_lora` puts the saved adapter on a loaded model so the same
model can be probed before and after (``medprobe extract --lora DIR``).

Training example (one per training-split image)::

    inputs  = the family adapter's preprocess(image, classification question)   # as extract sees it
    target  = " " + class name ("round_lesion" -> "round lesion") + EOS         # no space after
                                                                                # a prompt ending in whitespace

The answer tokens are appended to each row's prompt tokens (right padding; family sequence
extras such as Qwen's ``mm_token_type_ids`` or Gemma's ``token_type_ids`` get 0 = text for them),
and the loss is the mean cross-entropy over the answer tokens only: the base model's hidden
state at the position before each answer token goes through the LM head (full-vocabulary logits
are computed at answer positions only).

Defaults (:class:`LoraSettings`): rank 8, alpha 16, dropout 0.05, targets ``q_proj,v_proj``
inside the LLM layers only (scope ``llm``: the layer map's ``llm`` stage; scope ``all`` also
adapts same-named modules of the vision tower), AdamW lr 1e-4, no weight decay, 1 epoch,
batch size 4, seeded shuffling. The vision tower and connector are never trained.

``DIR`` after training: ``adapter_config.json`` + ``adapter_model.safetensors`` (peft
``save_pretrained``), ``train_log.jsonl`` (one JSON object per optimizer step: ``step``,
``epoch``, ``loss``, ``answer_tokens``, ``samples``, ``lr``, ``seconds``) and
``medprobe_finetune.json`` (format ``medprobe.finetune/1``: model card and weights, dataset spec,
fingerprint and training samples, prompt and answers, hyper-parameters, first/final loss,
synthetic flags, package versions).

An adapter's identity (:func:`medprobe.models.lora.lora_identity`: absolute path, sha256 of
``adapter_model.safetensors``, its ``adapter_config.json``, merged or not) is part of the
feature-store run key of every run extracted with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..adapter import LoadedModel
from ..models.lora import ADAPTER_CONFIG, RECORD, LoraError, quiet_peft
from ..prompts import answer_text

TRAIN_LOG = "train_log.jsonl"
RECORD_FORMAT = "medprobe.finetune/1"
SCOPES = ("llm", "all")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA and optimisation hyper-parameters (the defaults are the documented ones)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    #: ``llm``: only modules inside the LLM layers; ``all``: every module with a target name
    scope: str = "llm"
    epochs: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 4
    #: stop after this many optimizer steps (None: run every epoch)
    max_steps: int | None = None
    seed: int = 0

    def check(self) -> None:
        problems = []
        if self.rank < 1:
            problems.append(f"--rank must be >= 1 (got {self.rank})")
        if self.alpha <= 0:
            problems.append(f"--alpha must be > 0 (got {self.alpha})")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1) (got {self.dropout})")
        if not self.targets or not all(t and t.replace("_", "").isalnum() for t in self.targets):
            problems.append(f"--targets must be module names like q_proj,v_proj (got {list(self.targets)})")
        if self.scope not in SCOPES:
            problems.append(f"--scope must be one of {list(SCOPES)} (got {self.scope!r})")
        if self.epochs < 1:
            problems.append(f"--epochs must be >= 1 (got {self.epochs})")
        if self.lr <= 0:
            problems.append(f"--lr must be > 0 (got {self.lr})")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"--max-steps must be >= 1 (got {self.max_steps})")
        if problems:
            raise LoraError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d


@dataclass
class FinetuneResult:
    """The adapter directory, its ``medprobe_finetune.json`` content and the per-step losses."""

    path: Path
    record: dict[str, Any]
    losses: list[float] = field(default_factory=list)


# -- targets -----------------------------------------------------------------------------------
def target_modules(loaded: LoadedModel, settings: LoraSettings) -> str | list[str]:
    """peft ``target_modules``: for scope ``llm`` a regex (matched in full against module names)
    of the target names inside the layer map's ``llm`` layers; for ``all`` the plain names."""
    import re

    if settings.scope == "all":
        return list(settings.targets)
    layers = [s.path for s in loaded.layer_map if s.stage == "llm"]
    if not layers:
        raise LoraError(f"model '{loaded.card.id}': its layer map has no 'llm' layers to adapt (use --scope all)")
    names = "|".join(re.escape(t) for t in settings.targets)
    paths = "|".join(re.escape(p) for p in layers)
    return rf"(?:{paths})\.(?:.*\.)?(?:{names})"


# -- training examples -------------------------------------------------------------------------

def answer_ids(tokenizer: Any, prompt_ids: Sequence[int], class_name: str) -> list[int]:
    """Token ids of the answer to one prompt: the class words (a leading space unless the prompt
    ends in whitespace) followed by the EOS token when the tokenizer has one."""
    last = tokenizer.decode([int(prompt_ids[-1])]) if len(prompt_ids) else ""
    sep = "" if not last or last[-1].isspace() else " "
    ids = list(tokenizer(sep + answer_text(class_name), add_special_tokens=False)["input_ids"])
    if not ids:
        raise LoraError(f"answer {answer_text(class_name)!r} has no tokens")
    eos = tokenizer.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return [int(i) for i in ids] + ([int(eos)] if eos is not None else [])


def with_answers(inputs: dict[str, Any], answers: Sequence[Sequence[int]], pad_id: int) -> tuple[dict[str, Any], Any, Any]:
    """Append answer tokens to every row of a preprocessed batch.

    ``inputs``: the adapter's model inputs with ``input_ids`` (B, T) and ``attention_mask`` (B, T)
    (either padding side). Every other integer tensor of shape (B, T) (token-type ids) is carried
    along with 0 at answer positions; other inputs (pixel values, grids) pass unchanged.
    Returns ``(inputs', rows, positions)``: the right-padded (B, T') inputs and, for every answer
    token k, its row ``rows[k]`` and position ``positions[k]`` (both (K,) long tensors); the token
    is predicted from the hidden state at ``positions[k] - 1``.
    """
    import torch

    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    batch, _ = ids.shape
    carried = [
        k for k, v in inputs.items()
        if k not in ("input_ids", "attention_mask") and isinstance(v, torch.Tensor)
        and v.shape == ids.shape and not v.is_floating_point()
    ]
    kept = [mask[i].bool() for i in range(batch)]
    lengths = [int(kept[i].sum()) + len(answers[i]) for i in range(batch)]
    width = max(lengths)
    new_ids = torch.full((batch, width), pad_id, dtype=ids.dtype, device=ids.device)
    new_mask = torch.zeros((batch, width), dtype=mask.dtype, device=ids.device)
    extras = {k: torch.zeros((batch, width), dtype=inputs[k].dtype, device=ids.device) for k in carried}
    rows, positions = [], []
    for i in range(batch):
        prompt = ids[i][kept[i]]
        n = prompt.shape[0]
        answer = torch.tensor(list(answers[i]), dtype=ids.dtype, device=ids.device)
        new_ids[i, :n] = prompt
        new_ids[i, n : n + len(answer)] = answer
        new_mask[i, : n + len(answer)] = 1
        for k in carried:
            extras[k][i, :n] = inputs[k][i][kept[i]]
        rows += [i] * len(answer)
        positions += list(range(n, n + len(answer)))
    out = dict(inputs, input_ids=new_ids, attention_mask=new_mask, **extras)
    as_long = lambda v: torch.tensor(v, dtype=torch.long, device=ids.device)  # noqa: E731
    return out, as_long(rows), as_long(positions)


def answer_loss(model: Any, inputs: dict[str, Any], rows: Any, positions: Any, targets: Any, model_name: str) -> Any:
    """Mean cross-entropy of ``targets`` (K,) predicted at ``positions - 1`` of ``rows``.

    Runs the base model (``model.model``: vision tower, connector, LLM; hidden states (B, T', H))
    and the LM head on the K answer positions only (logits (K, V) in float32; the stock
    ``*ForConditionalGeneration`` classes compute their logits the same way, ``lm_head(hidden)``)."""
    import torch

    base = getattr(model, "model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or head is None:
        raise LoraError(f"model '{model_name}': {type(model).__name__} has no base model at `.model` or no LM head")
    hidden = base(**inputs, use_cache=False).last_hidden_state
    logits = head(hidden[rows, positions - 1]).float()
    return torch.nn.functional.cross_entropy(logits, targets)


# -- fine-tuning -------------------------------------------------------------------------------
def finetune(
    model: str | LoadedModel,
    dataset: str | Any,
    out: str | Path,
    *,
    settings: LoraSettings | None = None,
    prompt: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
    load: Any = None,
    **load_fields: Any,
) -> FinetuneResult:
    """LoRA SFT of ``model`` on the training split of ``dataset``; writes the adapter to ``out``.

    Args:
        model: a card id / reference, or a loaded MLLM (modified in place: LoRA layers are injected).
        dataset: a dataset spec or an opened Dataset; only samples with split ``train`` are used.
        out: the adapter directory (created; an existing adapter there needs ``overwrite``).
        settings: hyper-parameters (:class:`LoraSettings`); ``settings.seed`` also seeds the tiny model.
        load: which model, how (:class:`~medprobe.models.prepare.LoadOptions`; ``load_fields`` its fields
            as keywords: ``tiny`` -- the card's seeded tiny random model, pipeline checks only --,
            ``device``, ``dtype``, ``source``, ``revision`` ...). A LoRA adapter cannot be trained on top
            of another one here.
        prompt: the question; default :func:`medprobe.prompts.classification_question` of the classes
            (the question ``extract`` asks, so features are read at the prompt that was trained).
        on_step: called with (step, loss) after every optimizer step.
    """
    import numpy as np
    import peft
    import torch

    from ..datasets import open_dataset
    from ..features.provenance import synthetic_reasons
    from ..progress import progress_bar
    from ..prompts import classification_question
    from ..runtime import git_hash, package_versions
    from ..features.store import atomic_write_json, ensure_writable
    from ..models.prepare import options_of, prepare_model

    settings = settings or LoraSettings()
    settings.check()
    out = Path(out).expanduser().resolve()
    _check_out(out, overwrite)
    ensure_writable(out, "the LoRA adapter", "choose a writable --out")
    ds = open_dataset(dataset) if isinstance(dataset, str) else dataset
    train = [s for s in ds.samples if s.split == "train"]
    if not train:
        raise LoraError(f"dataset '{ds.spec}' has no samples in the train split")
    if isinstance(model, LoadedModel) and model.card.kind != "mllm":
        raise LoraError(f"model '{model.card.id}' is a {model.card.kind}; LoRA fine-tuning needs an MLLM")
    opts = options_of(load, load_fields).replace(seed=settings.seed)
    if opts.lora is not None:
        raise LoraError(f"model '{model if isinstance(model, str) else model.card.id}': fine-tuning starts from the "
                        "model's own weights; merge the earlier adapter into a checkpoint first")
    loaded, dev, dt = prepare_model(model, opts)
    if loaded.card.kind != "mllm":
        raise LoraError(f"model '{loaded.card.id}' is a {loaded.card.kind}; LoRA fine-tuning needs an MLLM")
    adapter = loaded.adapter
    tokenizer = getattr(loaded.processor, "tokenizer", None)
    if tokenizer is None:
        raise LoraError(f"model '{loaded.card.id}': its processor has no tokenizer")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    question = prompt if prompt is not None else classification_question(ds.classes)

    targets = target_modules(loaded, settings)
    config = peft.LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets, bias="none"
    )
    with _seeded(settings.seed, dev), quiet_peft():
        try:
            peft_model = peft.get_peft_model(loaded.model, config)
        except ValueError as exc:
            raise LoraError(f"model '{loaded.card.id}': LoRA targets {list(settings.targets)} "
                            f"(scope {settings.scope}) match no module: {exc}") from None
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)

    per_epoch = math.ceil(len(train) / settings.batch_size)
    total = settings.epochs * per_epoch if settings.max_steps is None else min(settings.max_steps, settings.epochs * per_epoch)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / TRAIN_LOG
    losses: list[float] = []
    step = 0
    started = time.perf_counter()
    peft_model.train()
    bar = progress_bar(total=total, desc=f"finetune {loaded.card.id}", enabled=progress)
    with _seeded(settings.seed, dev), open(log_path, "w", encoding="utf-8") as log:
        for epoch in range(settings.epochs):
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(train))
            for lo in range(0, len(train), settings.batch_size):
                if step >= total:
                    break
                chunk = [train[j] for j in order[lo : lo + settings.batch_size]]
                batch = adapter.preprocess(loaded, [ds.load_image(s) for s in chunk], question)
                ids, mask = batch.inputs["input_ids"], batch.inputs.get("attention_mask")
                answers = [
                    answer_ids(tokenizer, ids[i][mask[i].bool()] if mask is not None else ids[i], ds.classes[s.label])
                    for i, s in enumerate(chunk)
                ]
                inputs, rows, positions = with_answers(batch.inputs, answers, pad_id)
                targets_ids = inputs["input_ids"][rows, positions]
                loss = answer_loss(peft_model.base_model.model, inputs, rows, positions, targets_ids, loaded.card.id)
                if not torch.isfinite(loss):
                    raise LoraError(
                        f"model '{loaded.card.id}': non-finite loss at step {step + 1} (samples {[s.id for s in chunk]}); "
                        "lower --lr or use --dtype fp32"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                value = float(loss.detach())
                losses.append(value)
                log.write(json.dumps({
                    "step": step, "epoch": epoch, "loss": value, "answer_tokens": int(rows.numel()),
                    "samples": len(chunk), "lr": settings.lr, "seconds": round(time.perf_counter() - started, 3),
                }) + "\n")
                log.flush()
                bar.update(1)
                if on_step is not None:
                    on_step(step, value)
    bar.close()
    peft_model.eval()
    peft_model.save_pretrained(str(out), safe_serialization=True)

    reasons = synthetic_reasons(loaded, ds)
    train_ids = [s.id for s in train]
    record = {
        "format": RECORD_FORMAT,
        "model": {
            "id": loaded.card.id,
            "family": loaded.card.family,
            "weights": loaded.weights,
            "revision": opts.revision,
            "card": loaded.card.to_dict(),
        },
        "dataset": {
            "spec": ds.spec,
            "name": ds.name,
            "classes": list(ds.classes),
            "fingerprint": ds.fingerprint(),
            "split": "train",
            "samples": len(train),
            "sample_ids_sha256": hashlib.sha256("\n".join(train_ids).encode()).hexdigest(),
            "synthetic": bool(getattr(ds, "synthetic", False)),
        },
        "prompt": question,
        "answers": {c: answer_text(c) for c in ds.classes},
        "loss": "mean cross-entropy over the answer tokens (class words + EOS); prompt and image tokens unscored",
        "hyperparameters": {
            **settings.to_dict(),
            "target_modules": targets,
            "optimizer": "AdamW",
            "trainable_parameters": n_trainable,
        },
        "steps": step,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "device": dev,
        "dtype": dt,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
        "versions": {**package_versions(), "peft": peft.__version__},
        "git": git_hash(),
    }
    atomic_write_json(out / RECORD, record)
    return FinetuneResult(out, record, losses)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise LoraError(f"{out}: exists and is not a directory")
    if (out / ADAPTER_CONFIG).exists() or (out / RECORD).exists():
        if not overwrite:
            raise LoraError(f"{out}: already holds an adapter (pass --overwrite to replace it)")


@contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch for the block (the CPU generator and, for a CUDA device, that device's),
    restoring the previous RNG state afterwards."""
    import torch

    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
