"""``medprobe classify``: ask an MLLM the closed-set question about every image (P_final)."""

from __future__ import annotations

import click

from .options import CLASSIFY_MODE_HELP, DEFAULT_CLASSIFY_MODE, force_option, honour_deprecated, json_option
from .options import limit_option, load_options, open_dataset_for, skip_bad_option, store_option, store_root


@click.command()
@click.option("--model", "-m", "model", required=True, help="MLLM card id or alias (baselines are refused).")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@store_option(old_out=True)
@click.option("--mode", type=click.Choice(["generate", "score"]), default=DEFAULT_CLASSIFY_MODE, show_default=True,
              help=CLASSIFY_MODE_HELP)
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward pass.")
@limit_option("Use a deterministic subset of N samples (the one extract uses with the same --limit and --seed).")
@skip_bad_option
@click.option("--question-template", "prompt_template", default=None,
              help="Question with '{options}' where the class names go (default: medprobe's closed-set question).")
@click.option("--max-new-tokens", default=32, show_default=True, type=int, help="generate: answer length limit.")
@click.option("--score-norm", "score_normalization", type=click.Choice(["sum", "mean"]), default="sum", show_default=True,
              help="score: rank classes by summed or per-token mean log-probability.")
@click.option("--capture-last-token", is_flag=True,
              help="Also store the final-input-token features of every LLM layer from the same pass (RUN/last-token).")
@force_option("Recompute even when a finished run with the same key exists (default: reuse it).", old_no_resume=True)
@json_option("Print the run summary as JSON.")
@load_options(exclude=("weights", "random_init", "image_size"))
@honour_deprecated
def classify(model, dataset, store, mode, batch_size, limit, skip_bad, prompt_template, max_new_tokens,
             score_normalization, capture_last_token, force, as_json, load):
    """Prompted classification: answers per sample, accuracy per split, P_final = test accuracy.

    A rerun with the same settings reuses the finished run under --store (the output says so)."""
    import time

    from ..tasks.classify import classify as run_classify
    from .output import echo_json, echo_table

    ds = open_dataset_for(dataset, skip_bad=skip_bad)
    started = time.time()
    run = run_classify(
        model, ds, store_root(store), mode=mode, batch_size=batch_size, limit=limit, prompt_template=prompt_template,
        capture_last_token=capture_last_token, max_new_tokens=max_new_tokens, score_normalization=score_normalization,
        resume=not force, load=load,
    )
    rec = run.record
    summary = {
        "run": str(run.path),
        "model": run.model_id,
        "mode": run.mode,
        "p_final": run.p_final,
        "p_final_n": run.p_final_n,
        "p_final_ci95": rec.get("p_final_ci95"),
        "accuracy": {split: v["accuracy"] for split, v in rec["accuracy"].items()},
        "unparsed": rec["unparsed"],
        "methods": rec["accuracy"]["all"]["methods"],
        "capture": str(run.path / rec["capture"]["path"]) if rec.get("capture") else None,
        "adapter": (rec["model"].get("adapter_lora") or {}).get("path"),
        "warnings": rec.get("warnings", []),
        "synthetic": rec["synthetic_reasons"],
    }
    reused = (run.path / "classify.json").stat().st_mtime < started
    summary["outcome"] = {"status": "reused" if reused else "new"}
    if as_json:
        echo_json(summary)
        return
    if reused:
        click.echo("reused: a finished classify run with the same key already exists; nothing recomputed "
                   "(--force recomputes)")  # fmt: skip
    click.echo(f"run: {run.path}")
    echo_table(
        ["split", "n", "correct", "accuracy", "unparsed"],
        [[split, v["n"], v["correct"], f"{v['accuracy']:.3f}" if v["accuracy"] is not None else "—", v["unparsed"]]
         for split, v in rec["accuracy"].items()],
    )
    if run.p_final is not None:
        lo, hi = rec["p_final_ci95"]
        click.echo(f"P_final (test accuracy, {run.mode}): {run.p_final:.3f} [{lo:.3f}, {hi:.3f}] on {run.p_final_n} samples")
    else:
        click.echo("P_final: no test samples")
    click.echo("parse methods: " + ", ".join(f"{k} {v}" for k, v in summary["methods"].items()))
    if summary["capture"]:
        click.echo(f"final-input-token features: {summary['capture']}")
    for w in summary["warnings"]:
        click.echo(f"warning: {w}")
    if rec["synthetic"]:
        click.echo(f"NOTE: {rec['banner']}: " + "; ".join(rec["synthetic_reasons"]))
