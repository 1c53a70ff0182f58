"""``medprobe models``: the zoo (list, show a card, resolve a layer map)."""

from __future__ import annotations

import click

from .options import layers_option
from .output import echo_json, echo_table


@click.group()
def models() -> None:
    """The model zoo: cards registered by plugins."""


@models.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(["mllm", "baseline"]), help="Only MLLMs or only baselines.")
@click.option("--family", help="Adapter family (wildcards allowed, e.g. 'qwen*').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(pattern: str | None, kind: str | None, family: str | None, as_json: bool) -> None:
    """List cards; PATTERN is a wildcard on id, title, alias or hub id (e.g. 'medgemma*')."""
    from ..api import list_models
    from ..plugins import get_plugins

    cards = list_models(kind=kind, family=family, pattern=pattern)
    if as_json:
        echo_json([c.to_dict() for c in cards])
        return
    echo_table(
        ["id", "kind", "family", "category", "params", "hub_id"],
        [[c.id, c.kind, c.family, c.category, c.params, c.hub_id] for c in cards],
    )
    state = get_plugins()
    for name, entries in state.models.conflicts.items():
        click.echo(f"warning: '{name}' hidden: " + " and ".join(str(e.origin) for e in entries), err=True)


@models.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(model: str, as_json: bool) -> None:
    """Show the card of MODEL (id, alias or family:NAME)."""
    from ..api import get_card
    from ..plugins import get_plugins

    card = get_card(model)
    entry = get_plugins().models._entries.get(card.id)
    data = card.to_dict()
    data["registered_by"] = str(entry.origin) if entry else "ad-hoc (family:NAME)"
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key in ("sources", "settings"):
            continue
        if value in (None, "", [], {}):
            continue
        mark = "  (UNVERIFIED)" if key in card.unverified else ""
        click.echo(f"{key:>16}: {value}{mark}")
    if card.settings:
        click.echo(f"{'settings':>16}: " + ", ".join(f"{k}={v}" for k, v in card.settings.items()))
    if card.sources:
        click.echo("sources:")
        for fact, src in card.sources.items():
            click.echo(f"  {fact}: {src}")


@models.command()
@click.argument("model")
@click.option("--tiny", is_flag=True, help="Resolve on a tiny random model of the card's class (offline).")
@layers_option("Only layers matching these patterns (e.g. 'vision.*,connector').", dest="select", flag="--select")
@click.option("--dataset", "dataset_spec", default=None,
              help="Estimate the feature store and GPU memory for this dataset spec (its sample count).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Estimate for N samples (instead of --dataset).")
@click.option("--dtype", default="bfloat16", show_default=True, help="Model dtype of the memory estimate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Batch size of the memory estimate.")
@click.option("--readouts", default=None, help="Readouts of the estimate (default: the extract default).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def layers(model: str, tiny: bool, select: str | None, dataset_spec: str | None, n: int | None, dtype: str,
           batch_size: int, readouts: str | None, as_json: bool) -> None:
    """Resolve and validate the layer map of MODEL.

    Without --tiny the map is the real one: the card's published config.json is built on the meta
    device (no weights, no download) and the map, parameter count and image tokens per image are
    printed; --dataset SPEC or --n N adds the feature-store size and the GPU memory of one
    extraction batch. With --tiny the map is resolved on a tiny random model of the same class.
    Remote-code families are validated against their recorded module listing.
    """
    from ..api import get_card, layer_map
    from ..models.zoo import get_adapter

    card = get_card(model)
    adapter = get_adapter(card.family)
    if dataset_spec is not None and n is not None:
        raise click.UsageError("pass --dataset SPEC or --n N, not both")
    if dataset_spec is not None or n is not None:  # refuse bad names before building anything
        from ..features.readouts import parse_readouts
        from ..grid.resources import dtype_bytes

        dtype_bytes(dtype)
        parse_readouts(readouts)
    meta = None
    if tiny or adapter.needs_remote_code:
        lmap = layer_map(model, tiny=True)
        if dataset_spec is not None or n is not None:
            raise click.UsageError("--dataset / --n estimates need the full-size map; drop --tiny"
                                   + (" (remote-code families have none offline)" if adapter.needs_remote_code else ""))
    else:
        from ..models.meta import build_meta

        meta = build_meta(card, adapter)
        lmap = meta.layer_map
    chosen = lmap.select(select)
    estimate = None
    if meta is not None and (dataset_spec is not None or n is not None):
        from ..grid.resources import extraction_estimate

        count = n if n is not None else _dataset_size(dataset_spec)
        estimate = extraction_estimate(meta, n=count, dtype=dtype, batch_size=batch_size, layers=select,
                                       readouts=readouts)
        if dataset_spec is not None:
            estimate["dataset"] = dataset_spec
    if as_json:
        data = lmap.to_dict()
        data["layers"] = [s.to_dict() for s in chosen]
        data["tiny"] = bool(tiny)
        if meta is not None:
            data["meta"] = meta.to_dict()
        if estimate is not None:
            data["estimate"] = estimate
        echo_json(data)
        return
    click.echo(f"{card.id}: {len(lmap)} layers, resolved against {lmap.resolved_against}")
    for note in [*lmap.notes, *(meta.notes if meta else [])]:
        click.echo(f"note: {note}")
    if meta is not None:
        _echo_meta(meta)
    echo_table(
        ["id", "stage", "depth", "layout", "width", "path", "flags"],
        [
            [
                s.id,
                s.stage,
                f"{s.depth:.3f}",
                s.layout,
                s.width,
                s.path,
                ",".join(f for f, on in (("feeds-connector", s.feeds_connector), ("unused-by-mllm", not s.used)) if on),
            ]
            for s in chosen
        ],
    )
    if estimate is not None:
        _echo_estimate(estimate)


def _dataset_size(spec: str) -> int:
    from ..api import dataset

    return len(dataset(spec).samples)


def _echo_meta(meta) -> None:
    from ..grid.resources import format_count

    stages = ", ".join(f"{k} {format_count(v)}" for k, v in meta.stage_parameters.items())
    click.echo(f"parameters: {meta.parameters:,} ({format_count(meta.parameters)}): {stages}")
    it = meta.image_tokens
    click.echo(
        f"image tokens per image at {it.image_size} px: vision blocks {it.vision}"
        + (f" ({it.prefix} CLS)" if it.prefix else "")
        + f", connector {it.connector}, LLM {it.llm}  [{it.rule}]"
    )
    unused = [s.id for s in meta.layer_map if not s.used]
    feeds = [s.id for s in meta.layer_map if s.feeds_connector]
    click.echo(f"feeds the connector: {', '.join(feeds) or '-'}; unused by the MLLM: {', '.join(unused) or 'none'}")


def _echo_estimate(est) -> None:
    from ..grid.resources import format_size

    where = f"{est['samples']} samples" + (f" of {est['dataset']}" if est.get("dataset") else "")
    click.echo(
        f"estimate for {where}, {est['layers']} layers, readouts {','.join(est['readouts'])}: feature store "
        f"{format_size(est['feature_store_bytes'])}"
    )
    click.echo(
        f"GPU memory at {est['dtype']}, batch {est['batch_size']}: {format_size(est['gpu_bytes'])} = weights "
        f"{format_size(est['weights_bytes'])} + activations {format_size(est['activation_bytes'])} + readout buffers "
        f"{format_size(est['feature_buffer_bytes'])} (estimate from shapes, {est['text_tokens_assumed']} prompt tokens assumed)"
    )
