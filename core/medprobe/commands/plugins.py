"""``medprobe plugins``: installed plugins, their hooks and load errors."""

from __future__ import annotations

import click

from .output import echo_json, echo_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--errors", "errors_only", is_flag=True, help="Show only plugins that failed.")
def plugins(as_json: bool, errors_only: bool) -> None:
    """List plugins: name, distribution, version, hooks, load error if any."""
    from ..api import list_plugins

    listing = list_plugins(errors_only=errors_only)
    infos = listing.plugins
    if as_json:
        echo_json(listing.to_dict())
        return
    echo_table(
        ["name", "distribution", "version", "hooks", "error"],
        [[p.name, p.distribution, p.version, ",".join(h.replace("register_", "") for h in p.hooks), p.error or ""] for p in infos],
    )
    for err in listing.errors:
        if err.stage == "duplicate":
            click.echo(f"error: {err}", err=True)
