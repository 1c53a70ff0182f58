"""Prompted classification: ask an MLLM the closed-set question about every image -> ``P_final``.

::

    from medprobe.tasks.classify import classify
    run = classify("lingshu-7b", "busi:/data/BUSI", out="runs/", mode="generate")
    run.p_final, run.p_final_n           # test-split accuracy of the answers, and its n
    run.answers()[0]                     # {"id": ..., "answer": "Benign.", "parsed": 0, "method": "exact", ...}

The question is :func:`medprobe.prompts.classification_question` over the dataset's classes (the
same text :func:`medprobe.features.extract.extract` uses, so the final-input-token features of an extract
run belong to exactly this prompt); the adapter wraps it in the card's ``prompt_template`` or
the checkpoint's chat template with the image (``adapter.preprocess``). Two modes:

``generate``
    Greedy decoding (``do_sample=False``, one beam, ``max_new_tokens``) with the full
    ``...ForConditionalGeneration`` model's ``generate``; only the new tokens are decoded, and
    :mod:`medprobe.tasks.answers` parses them. The raw text, parsed label and parse method of every
    sample are kept; unparsed (and ambiguous) answers count as wrong and are reported.
``score``
    The log-likelihood of each class's answer string given the prompt. The prompt runs **once per
    image** (``use_cache=True``, ``logits_to_keep=1``): its last logits score each answer's
    first token, and the key/value cache, repeated once per class
    (``cache.batch_repeat_interleave(K)``), lets one more forward of shape (B*K, L-1) score the
    remaining answer tokens -- the prefix is never recomputed. The answer string of a class is
    its name as the question lists it (``round_lesion`` -> ``round lesion``, the text ``medprobe
    finetune`` trains), preceded by a space unless the prompt ends in whitespace; its tokens are
    the tokenizer's split of prompt + answer after the prompt's own tokens (no end-of-sequence
    token). Classes are ranked by the **summed** token log-probability
    (``score_normalization="sum"``, default) or its per-token mean (``"mean"``); the argmax is the
    prediction (method ``score``; nothing is unparsed). Supported for the transformers stock
    families (:class:`medprobe.models.hf.stock.StockMLLMAdapter`).

Rows of one batch must have the same length (fixed-resolution families always do); a batch whose
rows were padded is run one image at a time, so no prompt is ever padded.

The run directory ``OUT/<model>__<dataset>__<key12>/`` holds ``answers.jsonl`` (one JSON line per
sample: ``id``, ``split``, ``label``, ``label_name``, ``answer`` (generate) or ``scores`` (score,
class -> log-probability), ``parsed``, ``parsed_name``, ``method``, ``correct``) and, written
last, ``classify.json`` (format ``medprobe.tasks.classify/1``): the run key, model, dataset, mode,
question and rendered prompt, accuracy per split, ``p_final`` = test accuracy, ``p_final_n``,
unparsed counts, parse methods, confusion matrices, synthetic flags, package versions. The
run key hashes the model card, weights, family adapter, LoRA adapter (``adapter=DIR``, as in
``extract``), dataset spec/fingerprint/sample ids, mode, question, prompt, answer tokens, parser
version and dtype; running the same command again returns the finished run.

``capture_last_token=True`` also captures the final-input-token (``last-token`` readout) features
of every LLM layer in the same forward pass (the prompt forward of ``score``, the first step of
``generate``) into ``RUN/last-token/``, a complete feature-store run
(:class:`medprobe.features.store.Run`) whose run key equals that of ``extract(model, dataset,
layers="llm.*", readouts="last-token")`` with the same prompt. Without it, that extract command
produces the same features.
"""

from __future__ import annotations

import copy
import datetime as _dt
import inspect
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..adapter import LoadedModel
from ..models.prepare import LoadOptions
from ..registry import MedprobeError
from ..features.store import StoreError, atomic_write_bytes, atomic_write_json, read_record, run_key

FORMAT = "medprobe.tasks.classify/1"
#: bump when a change alters answers or scores (part of the run key)
CLASSIFY_VERSION = "1"
RECORD = "classify.json"
ANSWERS = "answers.jsonl"
#: the in-pass final-input-token feature run inside a classify run
CAPTURE_DIR = "last-token"
MODES = ("generate", "score")
NORMALIZATIONS = ("sum", "mean")
DEFAULT_MAX_NEW_TOKENS = 32
SPLITS = ("train", "val", "test")
#: transformers' neutral values of the sampling settings (GenerationConfig defaults)
SAMPLING_NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "typical_p": 1.0, "min_p": None}


class ClassifyError(MedprobeError):
    """Prompted classification cannot run as asked; the message names the model / run / option."""


# -- reading runs ----------------------------------------------------------------------------------
def is_classify_run(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a ``classify.json``."""
    return (Path(path) / RECORD).is_file()


@dataclass
class ClassifyRun:
    """A finished classify run directory opened for reading (``record`` = ``classify.json``)."""

    path: Path
    record: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "ClassifyRun":
        path = Path(path)
        return cls(path, read_record(path, RECORD, FORMAT, "classify run"))

    @property
    def key(self) -> str:
        return self.record["run_key"]

    @property
    def model_id(self) -> str:
        return self.record["model"]["card"]["id"]

    @property
    def weights(self) -> str:
        return self.record["model"]["weights"]

    @property
    def adapter_lora(self) -> dict[str, Any] | None:
        """The identity of the LoRA adapter the answers were made with (``None``: none)."""
        return self.record["model"].get("adapter_lora")

    @property
    def fingerprint(self) -> str:
        return self.record["dataset"]["fingerprint"]

    @property
    def mode(self) -> str:
        return self.record["mode"]

    @property
    def classes(self) -> list[str]:
        return list(self.record["dataset"]["classes"])

    @property
    def p_final(self) -> float | None:
        return self.record.get("p_final")

    @property
    def p_final_n(self) -> int:
        return int(self.record.get("p_final_n") or 0)

    def answers(self) -> list[dict[str, Any]]:
        """One dict per sample, in run order (see the module docstring for the keys)."""
        apath = self.path / ANSWERS
        try:
            lines = apath.read_text().splitlines()
        except FileNotFoundError:
            raise StoreError(f"{apath}: missing") from None
        rows = []
        for i, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise StoreError(f"{apath}:{i}: not JSON ({exc})") from None
        return rows

    def features_run(self) -> Any:
        """The in-pass ``last-token`` feature run (:class:`medprobe.features.store.Run`), or ``None``."""
        from ..features.store import Run

        sub = self.path / CAPTURE_DIR
        return Run.open(sub) if (sub / "manifest.json").is_file() else None


def supports_score(card: Any) -> bool:
    """Whether score mode works for the card's family (its adapter declares ``scores_answers``)."""
    from ..models.zoo import get_adapter

    return get_adapter(card.family).scores_answers


def score_families() -> list[str]:
    """The registered families whose adapters declare ``scores_answers``."""
    from ..models.zoo import get_adapter
    from ..plugins import get_plugins
    from ..registry import MedprobeError

    out = []
    for entry in get_plugins().adapters:
        try:
            if get_adapter(entry.name).scores_answers:
                out.append(entry.name)
        except MedprobeError:
            continue
    return sorted(out)


# -- answer strings (score mode) -------------------------------------------------------------------
def answer_strings(classes: Sequence[str]) -> list[str]:
    """The class names as :func:`medprobe.prompts.classification_question` lists them."""
    from ..prompts import answer_text

    return [answer_text(c) for c in classes]


def answer_tokens(tokenizer: Any, prompt_text: str, answers: Sequence[str]) -> list[list[int]]:
    """Token ids of each answer as it would follow ``prompt_text``.

    The answer gets a leading space unless the prompt ends in whitespace; its tokens are those
    of ``prompt + answer`` after the prompt's own tokens (so merges across the boundary follow
    the tokenizer), or of the answer alone when the joint tokenization does not start with the
    prompt's. Raises :class:`ClassifyError` for an answer with no tokens.
    """
    sep = "" if not prompt_text or prompt_text[-1].isspace() else " "
    base = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    out = []
    for answer in answers:
        joint = list(tokenizer(prompt_text + sep + answer, add_special_tokens=False)["input_ids"])
        ids = joint[len(base):] if joint[: len(base)] == base else list(
            tokenizer(sep + answer, add_special_tokens=False)["input_ids"]
        )
        if not ids:
            raise ClassifyError(f"answer {answer!r} has no tokens after the prompt")
        out.append([int(i) for i in ids])
    return out


# -- the forward passes ----------------------------------------------------------------------------
def cache_keyword(model: Any) -> str:
    """The forward keyword of the key/value cache: ``cache`` (transformers >= 5.2x) or
    ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(output: Any, model_id: str) -> Any:
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    if cache is None:
        raise ClassifyError(f"model '{model_id}': the prompt forward returned no key/value cache")
    if not hasattr(cache, "batch_repeat_interleave"):
        raise ClassifyError(
            f"model '{model_id}': its cache ({type(cache).__name__}) cannot be repeated per class; use --mode generate"
        )
    return cache


def score_batch(
    loaded: LoadedModel,
    batch: Any,
    tokens: Sequence[Sequence[int]],
    *,
    normalization: str = "sum",
    pad_id: int = 0,
    prefix: Callable[[Callable[[], None]], None] | None = None,
) -> Any:
    """Answer log-likelihoods of B images: (B, K) float32 CPU tensor, K = ``len(tokens)``.

    One prompt forward of (B, T) with ``use_cache=True, logits_to_keep=1``; when some answer has
    more than one token, one continuation forward of (B*K, L-1) (L = longest answer) over the
    cache repeated K times (rows ``b*K + k``; shorter answers right-padded, padding ignored).
    ``prefix``, if given, is called with the prompt forward as a zero-argument function and must
    call it once (the capture engine wraps it).
    """
    import torch

    model = loaded.model
    held: dict[str, Any] = {}

    def run_prompt() -> None:
        held["out"] = model(**batch.inputs, use_cache=True, logits_to_keep=1)

    with torch.inference_mode():
        if prefix is None:
            run_prompt()
        else:
            prefix(run_prompt)
        out = held["out"]
        first = out.logits[:, -1].float().log_softmax(-1)  # (B, V)
        b, k = first.shape[0], len(tokens)
        device = first.device
        lengths = torch.tensor([len(t) for t in tokens], dtype=torch.float32)
        scores = first[:, torch.tensor([t[0] for t in tokens], device=device)]  # (B, K)
        longest = max(len(t) for t in tokens)
        if longest > 1:
            cache = _cache_of(out, loaded.card.id)
            cache.batch_repeat_interleave(k)
            inputs = torch.full((k, longest - 1), pad_id, dtype=torch.long)
            targets = torch.zeros((k, longest - 1), dtype=torch.long)
            valid = torch.zeros((k, longest - 1), dtype=torch.float32)
            for j, t in enumerate(tokens):
                inputs[j, : len(t) - 1] = torch.tensor(t[:-1])
                targets[j, : len(t) - 1] = torch.tensor(t[1:])
                valid[j, : len(t) - 1] = 1.0
            rest = model(input_ids=inputs.repeat(b, 1).to(device), use_cache=True, **{cache_keyword(model): cache})
            logp = rest.logits.float().log_softmax(-1)  # (B*K, L-1, V)
            picked = logp.gather(-1, targets.repeat(b, 1).to(device).unsqueeze(-1)).squeeze(-1)
            scores = scores + (picked * valid.repeat(b, 1).to(device)).sum(-1).view(b, k)
        scores = scores.float().cpu()
        if normalization == "mean":
            scores = scores / lengths
    return scores


def generation_config(model: Any, max_new_tokens: int, tokenizer: Any) -> Any:
    """The model's generation config made greedy: one beam, no sampling, ``max_new_tokens``."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.max_new_tokens = max_new_tokens
    # sampling settings of the checkpoint (e.g. temperature 0.1) do nothing when greedy; reset them to
    # the neutral values (``None`` would be refilled from the checkpoint's config and warned about)
    for name, neutral in SAMPLING_NEUTRAL.items():
        if hasattr(config, name):
            setattr(config, name, neutral)
    if config.pad_token_id is None:
        pad = getattr(tokenizer, "pad_token_id", None)
        config.pad_token_id = pad if pad is not None else config.eos_token_id
    return config


def generate_batch(loaded: LoadedModel, batch: Any, config: Any, tokenizer: Any) -> list[str]:
    """Greedy answers of B images: the decoded new tokens (special tokens skipped), one string each."""
    import torch

    ids = batch.inputs["input_ids"]
    with torch.inference_mode():
        out = loaded.model.generate(**batch.inputs, generation_config=config)
    t = ids.shape[1]
    # stock models return prompt + new tokens; models generating from embeddings return the new ones
    new = out[:, t:] if out.shape[1] >= t and torch.equal(out[:, :t].to(ids.device), ids) else out
    return [str(s) for s in tokenizer.batch_decode(new, skip_special_tokens=True)]


def uniform_batches(adapter: Any, loaded: LoadedModel, images: Sequence[Any], question: str) -> list[Any]:
    """``adapter.preprocess`` of the images; when the rows came out padded (different lengths),
    one batch per image instead, so no prompt is padded."""
    batch = adapter.preprocess(loaded, images, question)
    mask = batch.inputs.get("attention_mask")
    if mask is None or bool(mask.bool().all()) or len(images) == 1:
        return [batch]
    return [adapter.preprocess(loaded, [im], question) for im in images]


# -- scoring the answers ---------------------------------------------------------------------------
def summarize(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, unparsed count and parse methods per split (and ``all``), and confusion matrices
    (rows: true class; columns: predicted class, then ``unparsed``)."""
    from ..analysis.metrics import wilson_ci

    out: dict[str, Any] = {"accuracy": {}, "confusion": {"true": list(classes), "predicted": [*classes, "unparsed"]}}
    for split in (*SPLITS, "all"):
        part = [r for r in rows if split == "all" or r["split"] == split]
        n = len(part)
        correct = sum(1 for r in part if r["correct"])
        unparsed = sum(1 for r in part if r["parsed"] is None)
        out["accuracy"][split] = {
            "n": n,
            "correct": correct,
            "accuracy": correct / n if n else None,
            "ci95": list(wilson_ci(correct, n)) if n else None,
            "unparsed": unparsed,
            "methods": dict(sorted(Counter(r["method"] for r in part).items())),
        }
        if split in ("test", "all"):
            matrix = [[0] * (len(classes) + 1) for _ in classes]
            for r in part:
                matrix[r["label"]][len(classes) if r["parsed"] is None else r["parsed"]] += 1
            out["confusion"][split] = matrix
    return out


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows).encode()


def _run_name(card_id: str, dataset_name: str, key: str) -> str:
    return f"{card_id.replace('/', '_').replace(':', '_')}__{dataset_name}__{key[:12]}"


# -- the in-pass feature capture -------------------------------------------------------------------
def capture_plan(
    loaded: LoadedModel, ds: Any, question: str, *, dtype: str, device: str, batch_size: int, seed: int,
    limit: int | None, load_options: dict[str, Any],
) -> Any:
    """The :class:`medprobe.features.plan.ExtractPlan` of the in-pass ``last-token`` run: exactly what
    ``extract(layers="llm.*", readouts="last-token", prompt=question)`` would write (same run
    key, same manifest), stored inside the classify run instead of beside it."""
    from ..features.plan import plan_extract

    plan = plan_extract(loaded, ds, ".", layers="llm.*", readouts="last-token", batch_size=batch_size, device=device,
                        dtype=dtype, limit=limit, seed=seed, prompt=question, load_options=load_options)
    plan.manifest["captured_by"] = "medprobe classify (the forward pass that produced the answers)"
    return plan


# -- the API ---------------------------------------------------------------------------------------
def classify(
    model: str | LoadedModel,
    dataset: str | Any,
    out: str | Path = "runs",
    *,
    mode: str = "generate",
    batch_size: int = 8,
    limit: int | None = None,
    prompt_template: str | None = None,
    capture_last_token: bool = False,
    progress: bool | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    score_normalization: str = "sum",
    resume: bool = True,
    load: LoadOptions | None = None,
    **load_fields: Any,
) -> ClassifyRun:
    """Ask the closed-set question about every sample; returns the finished :class:`ClassifyRun`.

    Args:
        model: an MLLM card id / alias, or an already loaded MLLM. Baselines are refused.
        dataset: a dataset spec or a Dataset.
        out: the folder holding run directories.
        mode: ``generate`` (greedy answers, parsed) or ``score`` (answer log-likelihoods).
        limit: a deterministic subset of this many samples (the one ``extract`` picks).
        prompt_template: the question template, with ``{options}`` where the comma-separated
            class names go (default :data:`medprobe.prompts.DEFAULT_TEMPLATE`). The card's
            ``prompt_template`` still wraps the question with the image.
        capture_last_token: also store the final-input-token features of every LLM layer from
            the same forward pass in ``RUN/last-token/`` (see the module docstring).
        max_new_tokens: generate mode: the answer length limit.
        score_normalization: score mode: ``sum`` (default) or ``mean`` token log-probability.
        resume: return an existing finished run with the same key instead of recomputing.
        load: which model, how (:class:`~medprobe.models.prepare.LoadOptions`); ``load_fields`` are
            its fields as keywords (``tiny=True`` -- the card's seeded tiny random model, answers are
            noise; ``device``, ``dtype``, ``seed``, ``source``, ``revision``, ``lora`` / ``adapter``:
            a peft LoRA adapter directory, whose identity is part of the run key and of the pairing
            with extract runs).
    """
    from ..datasets import open_dataset
    from ..features.provenance import dataset_record, preprocessing_fingerprint, select_samples, synthetic_reasons
    from ..prompts import classification_question
    from ..runtime import git_hash, package_versions
    from ..models.zoo import get_card
    from ..models.prepare import options_of, prepare_model

    opts = options_of(load, load_fields)
    seed, load_options = opts.seed, opts.adapter_kwargs()
    if mode not in MODES:
        raise ClassifyError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if score_normalization not in NORMALIZATIONS:
        raise ClassifyError(f"unknown score normalization {score_normalization!r}; choose one of {list(NORMALIZATIONS)}")
    if batch_size < 1:
        raise ClassifyError("--batch-size must be at least 1")
    if max_new_tokens < 1:
        raise ClassifyError("--max-new-tokens must be at least 1")
    if prompt_template is not None and "{options}" not in prompt_template:
        raise ClassifyError("the question template must contain '{options}' where the class names go")
    card = model.card if isinstance(model, LoadedModel) else get_card(model)
    if card.kind != "mllm":
        raise ClassifyError(
            f"model '{card.id}' is a {card.kind} (family '{card.family}'): prompted classification asks an MLLM a "
            "question and parses its answer; a vision baseline has no language model to ask (measure baselines "
            "with `medprobe extract` + `medprobe probe`)"
        )
    stock = supports_score(card)
    if mode == "score" and not stock:
        raise ClassifyError(
            f"model '{card.id}': score mode needs a transformers stock family (an adapter that scores answers: {', '.join(score_families())}); "
            f"family '{card.family}' is not one; use --mode generate"
        )

    ds = open_dataset(dataset) if isinstance(dataset, str) else dataset
    samples = select_samples(ds.samples, limit, seed)
    if not samples:
        raise ClassifyError(f"dataset '{ds.spec}' has no samples")
    loaded, dev, dt = prepare_model(model, opts)
    family = loaded.adapter
    adapter_lora = loaded.extra.get("adapter_lora")
    if not hasattr(loaded.model, "generate"):
        raise ClassifyError(f"model '{card.id}': {type(loaded.model).__name__} cannot generate (no .generate)")
    tokenizer = getattr(loaded.processor, "tokenizer", None) or loaded.processor
    if tokenizer is None:
        raise ClassifyError(f"model '{card.id}': no tokenizer/processor loaded")

    from .answers import PARSER_VERSION, AnswerParser

    question = classification_question(ds.classes, prompt_template)
    parser = AnswerParser(ds.classes, ds.name)
    prompt_text = None
    if stock:
        from ..models.hf.prompting import render_prompt

        prompt_text = render_prompt(loaded.card, loaded.processor, question, family.image_placeholder(loaded.processor))
    answers = answer_strings(ds.classes)
    tokens = answer_tokens(tokenizer, prompt_text, answers) if mode == "score" else None
    warnings: list[str] = []
    if tokens is not None:
        seen: dict[tuple[int, ...], str] = {}
        for cls, ids in zip(ds.classes, tokens):
            if tuple(ids) in seen:
                warnings.append(
                    f"classes '{seen[tuple(ids)]}' and '{cls}' have the same answer tokens {ids}: score mode cannot "
                    "tell them apart (ties go to the first)"
                )
            seen.setdefault(tuple(ids), cls)
    warnings.extend(f"answer parser: {d}" for d in parser.dropped)

    payload = {
        "format": FORMAT,
        "classify_version": CLASSIFY_VERSION,
        "parser_version": PARSER_VERSION,
        "model": loaded.card.identity(),
        "weights": loaded.weights,
        "adapter": {"family": family.family, "version": family.version},
        "dataset": {"spec": ds.spec, "fingerprint": ds.fingerprint(), "sample_ids": [s.id for s in samples]},
        "mode": mode,
        "question": question,
        "prompt": prompt_text,
        "answer_tokens": tokens,
        "score_normalization": score_normalization if mode == "score" else None,
        "max_new_tokens": max_new_tokens if mode == "generate" else None,
        "preprocessing": preprocessing_fingerprint(loaded),
        "dtype": dt,
    }
    if adapter_lora is not None:
        payload["adapter_lora"] = adapter_lora
    key = run_key(payload)
    run_dir = Path(out) / _run_name(loaded.card.id, ds.name, key)

    from filelock import FileLock

    from ..features.store import ensure_writable

    def finished() -> ClassifyRun | None:
        """The finished run with this key (and its capture, when asked for), if ``resume``."""
        if not (resume and is_classify_run(run_dir)):
            return None
        try:
            existing = ClassifyRun.open(run_dir)
        except StoreError:
            return None
        return existing if existing.key == key and (not capture_last_token or _capture_complete(existing)) else None

    if (existing := finished()) is not None:  # reused without the lock (read-only folders too)
        return existing
    ensure_writable(run_dir, "the classify run", "choose a writable --store (a finished run with this key there would "
                    "have been reused)")
    with FileLock(str(run_dir / ".lock")):
        if (existing := finished()) is not None:  # another process finished it while this one waited
            return existing
        (run_dir / RECORD).unlink(missing_ok=True)  # the record marks a finished run: written last
        rows, captured = _run(
            loaded, family, ds, samples, question, mode=mode, tokens=tokens, parser=parser,
            normalization=score_normalization, max_new_tokens=max_new_tokens, tokenizer=tokenizer,
            batch_size=batch_size, progress=progress, capture_dir=run_dir / CAPTURE_DIR if capture_last_token else None,
            capture_args=dict(dtype=dt, device=dev, batch_size=batch_size, seed=seed, limit=limit,
                              load_options=load_options),
        )
        atomic_write_bytes(run_dir / ANSWERS, _jsonl(rows))
        summary = summarize(rows, ds.classes)
        test = summary["accuracy"]["test"]
        reasons = synthetic_reasons(loaded, ds)
        from ..analysis.report import SYNTHETIC_BANNER

        record = {
            "format": FORMAT,
            "run_key": key,
            "status": "complete",
            "classify_version": CLASSIFY_VERSION,
            "parser_version": PARSER_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "model": {
                "card": loaded.card.to_dict(),
                "weights": loaded.weights,
                "adapter": family.family,
                "adapter_version": family.version,
                "revision": load_options.get("revision"),
                "adapter_lora": adapter_lora,
            },
            "dataset": dataset_record(ds, samples, limit),
            "mode": mode,
            "question": question,
            "prompt": prompt_text,
            "answers": {
                "strings": answers,
                "tokens": tokens,
                "score_normalization": score_normalization if mode == "score" else None,
                "max_new_tokens": max_new_tokens if mode == "generate" else None,
            },
            "p_final": test["accuracy"],
            "p_final_n": test["n"],
            "p_final_ci95": test["ci95"],
            "accuracy": summary["accuracy"],
            "unparsed": {split: summary["accuracy"][split]["unparsed"] for split in (*SPLITS, "all")},
            "confusion": summary["confusion"],
            "warnings": warnings,
            "capture": {"path": CAPTURE_DIR, "run_key": captured} if captured else None,
            "preprocessing": payload["preprocessing"],
            "dtype": dt,
            "device": dev,
            "batch_size": batch_size,
            "seed": seed,
            "synthetic": bool(reasons),
            "synthetic_reasons": reasons,
            "banner": SYNTHETIC_BANNER if reasons else None,
            "versions": package_versions(),
            "git": git_hash(),
        }
        atomic_write_json(run_dir / RECORD, record)
        return ClassifyRun.open(run_dir)


def _capture_complete(run: ClassifyRun) -> bool:
    try:
        sub = run.features_run()
    except StoreError:
        return False
    return sub is not None and sub.complete


def _run(
    loaded: LoadedModel, adapter: Any, ds: Any, samples: Sequence[Any], question: str, *, mode: str,
    tokens: list[list[int]] | None, parser: Any, normalization: str, max_new_tokens: int, tokenizer: Any,
    batch_size: int, progress: bool | None, capture_dir: Path | None, capture_args: dict[str, Any],
) -> tuple[list[dict[str, Any]], str | None]:
    """Every sample's answer row (and the key of the captured feature run, if any)."""
    import numpy as np

    from ..features.capture import Capture
    from ..features.engine import ShardBuffer
    from ..progress import progress_bar

    classes = list(ds.classes)
    config = generation_config(loaded.model, max_new_tokens, tokenizer) if mode == "generate" else None
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    writer = None
    layers: list[Any] = []
    if capture_dir is not None:
        from ..features.store import RunWriter

        plan = capture_plan(loaded, ds, question, **capture_args)
        if [s.id for s in plan.samples] != [s.id for s in samples]:
            raise ClassifyError(f"model '{loaded.card.id}': the capture run's samples differ from the answers' samples")
        layers = plan.selected
        writer = RunWriter.create_or_resume(capture_dir, plan.manifest, resume=False)
    buffer = ShardBuffer(lambda arrays, _batches: writer.write_shard(arrays))
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=len(samples), desc=f"classify {loaded.card.id} ({mode})", enabled=progress)
    for b, lo in enumerate(range(0, len(samples), batch_size)):
        chunk = samples[lo : lo + batch_size]
        images = [ds.load_image(s) for s in chunk]
        results: list[Any] = []
        captured_parts: dict[tuple[str, str], list[Any]] = {}
        for batch in uniform_batches(adapter, loaded, images, question):
            if writer is None:
                results.extend(_one(loaded, batch, mode, tokens, normalization, pad_id, config, tokenizer, None)[0])
                continue
            with Capture(loaded.model, layers, ("last-token",), stop_early=False, model_name=loaded.card.id) as cap:
                answers, features = _one(loaded, batch, mode, tokens, normalization, pad_id, config, tokenizer, cap)
            results.extend(answers)
            for k, v in features.items():
                captured_parts.setdefault(k, []).append(v.numpy())
        for sample, result in zip(chunk, results):
            rows.append(_row(sample, result, mode, classes, parser))
        if writer is not None:
            buffer.add({k: np.concatenate(v, axis=0) for k, v in captured_parts.items()}, (b, lo, lo + len(chunk)))
        bar.update(len(chunk))
    bar.close()
    captured = None
    if writer is not None:
        buffer.flush()
        labels = np.array([s.label for s in samples], dtype=np.int64)
        captured = writer.finalize(labels, [s.split for s in samples]).key
    return rows, captured


def _one(
    loaded: LoadedModel, batch: Any, mode: str, tokens: list[list[int]] | None, normalization: str, pad_id: int,
    config: Any, tokenizer: Any, cap: Any,
) -> tuple[list[Any], dict[tuple[str, str], Any]]:
    """Answers (generate: strings) or scores (score: rows of K floats) of one batch, and, with
    ``cap`` (an open :class:`medprobe.features.capture.Capture`), the features captured in the prompt
    forward: (layer id, readout) -> (B, D) float32 CPU tensors (empty without ``cap``)."""
    features: dict[tuple[str, str], Any] = {}
    if mode == "score":

        def prefix(forward: Callable[[], None]) -> None:
            features.update(cap.run(batch, forward))

        scores = score_batch(
            loaded, batch, tokens or [], normalization=normalization, pad_id=pad_id,
            prefix=prefix if cap is not None else None,
        )
        return scores.tolist(), features
    if cap is None:
        return generate_batch(loaded, batch, config, tokenizer), features
    texts: list[str] = []
    # the hooks see the prompt step only: they are removed when the first forward of generate ends
    handle = loaded.model.register_forward_hook(lambda module, args, output: cap.close())
    try:
        features.update(cap.run(batch, lambda: texts.extend(generate_batch(loaded, batch, config, tokenizer))))
    finally:
        handle.remove()
    return texts, features


def _row(sample: Any, result: Any, mode: str, classes: list[str], parser: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": sample.id, "split": sample.split, "label": int(sample.label),
                           "label_name": classes[sample.label]}
    if mode == "score":
        scores = [float(x) for x in result]
        parsed = max(range(len(scores)), key=lambda i: scores[i])
        row["scores"] = dict(zip(classes, scores))
        method = "score"
    else:
        row["answer"] = result
        parsed, method = parser(result)
    row["parsed"] = parsed
    row["parsed_name"] = classes[parsed] if parsed is not None else None
    row["method"] = method
    row["correct"] = parsed is not None and parsed == sample.label
    return row
