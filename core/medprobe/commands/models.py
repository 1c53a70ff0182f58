"""``medprobe models``: the zoo (list, show a card, resolve a layer map)."""

from __future__ import annotations

import click

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
@click.option("--select", "select", default=None, help="Only layers matching these patterns (e.g. 'vision.*,connector').")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def layers(model: str, tiny: bool, select: str | None, as_json: bool) -> None:
    """Resolve and validate the layer map of MODEL.

    With --tiny the map is resolved on a tiny random model of the same architecture class built
    offline; remote-code families are validated against their recorded module listing.
    """
    from ..api import get_card, layer_map
    from ..models.zoo import get_adapter

    card = get_card(model)
    if not tiny and not get_adapter(card.family).needs_remote_code:
        raise click.UsageError("resolving on real weights needs a download; pass --tiny to resolve offline")
    lmap = layer_map(model, tiny=True)
    chosen = lmap.select(select)
    if as_json:
        data = lmap.to_dict()
        data["layers"] = [s.to_dict() for s in chosen]
        data["tiny"] = True
        echo_json(data)
        return
    click.echo(f"{card.id}: {len(lmap)} layers, resolved against {lmap.resolved_against}")
    for note in lmap.notes:
        click.echo(f"note: {note}")
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
