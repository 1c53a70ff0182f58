"""``medprobe plugins``: installed plugins, their hooks and load errors."""

from __future__ import annotations

import click

from .output import echo_json, echo_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--errors", "errors_only", is_flag=True, help="Show only plugins that failed.")
def plugins(as_json: bool, errors_only: bool) -> None:
    """List plugins: name, distribution, version, hooks, load error if any."""
    from ..plugins import get_plugins

    state = get_plugins()
    infos = [p for p in state.plugins if p.error or not errors_only]
    if as_json:
        echo_json(
            {
                "plugins": [p.to_dict() for p in infos],
                "errors": [e.to_dict() for e in state.errors],
            }
        )
        return
    echo_table(
        ["name", "distribution", "version", "hooks", "error"],
        [[p.name, p.distribution, p.version, ",".join(h.replace("register_", "") for h in p.hooks), p.error or ""] for p in infos],
    )
    for err in state.errors:
        if err.stage == "duplicate":
            click.echo(f"error: {err}", err=True)
