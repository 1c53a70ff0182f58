"""``medprobe datasets``: list loader schemes, show a dataset's classes, split, checks."""

from __future__ import annotations

from typing import Any

import click

from .output import echo_json, echo_table

_MAX_LISTED = 10


@click.group()
def datasets() -> None:
    """Datasets: loaders registered by plugins, and what a dataset spec contains."""


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List dataset loader schemes (SPEC = SCHEME:LOCATION?option=value)."""
    from ..api import list_datasets

    loaders = list_datasets()
    if as_json:
        echo_json([d.to_dict() for d in loaders])
        return
    echo_table(["scheme", "description", "registered by"], [[d.scheme, d.description, d.plugin] for d in loaders])


def _histogram(counts: dict[str, int]) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} ({v})" for k, v in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        text += f", ... {len(items) - _MAX_LISTED} more"
    return text or "-"


def _print_info(info: dict[str, Any]) -> None:
    click.echo(f"dataset: {info['spec']}")
    if info["synthetic"]:
        click.echo("SYNTHETIC DATA: generated images, not patient data")
    click.echo(f"classes: {', '.join(f'{i}={c}' for i, c in enumerate(info['classes']))}")
    split = info["split_method"]
    if info["fractions"]:
        split += " (" + "/".join(f"{round(f * 100):g}" for f in info["fractions"]) + f" train/val/test, seed {info['seed']})"
    click.echo(f"split: {split}")
    click.echo(f"samples: {info['num_samples']}")
    counts = info["counts"]
    rows = []
    for sp in ("train", "val", "test", "total"):
        row = [counts[sp][c] for c in info["classes"]]
        rows.append([sp, *row, sum(row)])
    echo_table(["split", *info["classes"], "all"], rows)
    click.echo(f"image sizes: {_histogram(info['image_sizes'])}")
    click.echo(f"image modes: {_histogram(info['image_modes'])}")
    groups = info["groups"]
    if groups["count"]:
        leaks = groups["in_several_splits"]
        leak_text = "none" if not leaks else f"{len(leaks)} (" + ", ".join(list(leaks)[:_MAX_LISTED]) + ")"
        click.echo(
            f"groups: {groups['count']} patient/group ids on {groups['samples_with_group']} samples; in several splits: {leak_text}"
        )
    else:
        click.echo("groups: no patient/group ids")
    dups = info["duplicates"]
    if dups:
        cross = sum(1 for d in dups if d["cross_split"])
        click.echo(f"duplicates: {len(dups)} set(s) of identical images, {cross} across splits")
        for d in dups[:_MAX_LISTED]:
            where = ", ".join(f"{i} [{s}, {lab}]" for i, s, lab in zip(d["ids"], d["splits"], d["labels"]))
            click.echo(f"  {d['hash'][:12]}: {where}")
        if len(dups) > _MAX_LISTED:
            click.echo(f"  ... {len(dups) - _MAX_LISTED} more (--json lists all)")
        if info["dropped_duplicates"]:
            click.echo(f"  dropped (--dedup): {len(info['dropped_duplicates'])}")
    elif info["synthetic"]:
        click.echo("duplicates: not checked (generated data)")
    else:
        click.echo("duplicates: none")
    near = info.get("near_duplicates") or []
    if near:
        cross = sum(1 for c in near if c["cross_split"])
        threshold = (info.get("leakage") or {}).get("threshold")
        click.echo(f"near duplicates (pHash Hamming <= {threshold}): {len(near)} cluster(s), {cross} across splits")
        for c in near[:_MAX_LISTED]:
            click.echo("  " + ", ".join(f"{i} [{s}]" for i, s in zip(c["ids"], c["splits"])))
    if info["skipped"]:
        click.echo(f"skipped (--skip-bad): {len(info['skipped'])}")
        for (sid, reason), src in list(zip(info["skipped"], info["skipped_sources"]))[:_MAX_LISTED]:
            click.echo(f"  {src}: {reason}")
        if len(info["skipped"]) > _MAX_LISTED:
            click.echo(f"  ... {len(info['skipped']) - _MAX_LISTED} more (--json lists all)")
    for reason, entry in info["ignored_files"].items():
        click.echo(f"ignored ({reason}): {entry['count']}, e.g. {', '.join(entry['examples'][:3])}")
    for note in info["notes"]:
        click.echo(f"note: {note}")
    for warning in info["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(f"fingerprint: {info['fingerprint']}")


@datasets.command()
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes the sample ids of every split).")
@click.option("--dedup", is_flag=True, default=None, help="Drop exact duplicate images (keep one copy).")
@click.option("--skip-bad", "skip_bad", is_flag=True, default=None, help="Skip and list unreadable or mislabelled files instead of failing.")
@click.option("--seed", type=int, default=None, help="Seed of the split (and of synthetic data); default 0.")
@click.option("--limit", type=int, default=None, help="Keep a stratified subset of N samples.")
def show(spec: str, as_json: bool, dedup: bool | None, skip_bad: bool | None, seed: int | None, limit: int | None) -> None:
    """Open SPEC and show classes, counts per split and class, image sizes and modes, patient
    groups, duplicates, skipped files and warnings.

    SPEC examples: synthetic:lesions, digits, imagefolder:PATH, csv:PATH.csv, medmnist:PATH.npz,
    busi:PATH, chest-xray:PATH, covid-ct:PATH (options: SPEC?key=value&key=value).
    """
    from ..api import dataset

    kwargs: dict[str, Any] = {}
    if dedup:
        kwargs["dedup"] = True
    if skip_bad:
        kwargs["skip_bad"] = True
    if seed is not None:
        kwargs["seed"] = seed
    if limit is not None:
        kwargs["limit"] = limit
    ds = dataset(spec, **kwargs)
    info = ds.info()
    if as_json:
        info["split_ids"] = ds.split_ids()
        echo_json(info)
        return
    _print_info(info)
