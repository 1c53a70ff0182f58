"""The ``medprobe`` command line.

Commands are imported lazily (``"module:attr"`` per command) so ``medprobe --help`` imports
neither torch nor any model library; plugins add commands through ``register_commands``.
Errors a user can fix (:class:`~medprobe.registry.MedprobeError`) are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

import click

#: built-in commands: name -> "module:attr" of a click.Command
BUILTIN_COMMANDS: dict[str, str] = {
    "plugins": "medprobe.commands.plugins:plugins",
    "models": "medprobe.commands.models:models",
    "datasets": "medprobe.commands.datasets:datasets",
    "extract": "medprobe.commands.extract:extract",
    "classify": "medprobe.commands.classify:classify",
    "cache": "medprobe.commands.cache:cache",
    "probe": "medprobe.commands.analyze:probe",
    "report": "medprobe.commands.analyze:report",
    "compare": "medprobe.commands.analyze:compare",
    "demo": "medprobe.commands.analyze:demo",
    "finetune": "medprobe.commands.finetune:finetune",
    "train": "medprobe.commands.train:train",
    "zeroshot": "medprobe.commands.zeroshot:zeroshot",
    "grid": "medprobe.commands.grid:grid",
}


class LazyGroup(click.Group):
    """A click group whose built-in commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(BUILTIN_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = BUILTIN_COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # a broken command module must not take the whole CLI down
            message = f"command '{name}' is unavailable ({module_name}: {type(exc).__name__}: {exc})"

            @click.command(name=name, help=message, context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise click.ClickException(message)

            return unavailable


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medprobe")
def cli() -> None:
    """medprobe: find where medical multimodal LLMs lose classification signal.

    Hook every stage of an MLLM (vision blocks -> connector -> LLM layers), probe each layer,
    score the feature evolution (FHS), and compare with CNN/ViT baselines in one report.
    """


_COMMANDS_FROM: object | None = None  # the plugin state whose commands are on ``cli``


def _add_plugin_commands() -> None:
    """Let the loaded plugins add their commands (again when the plugin set was reloaded, e.g. with
    other MEDPROBE_LOAD_PLUGINS / MEDPROBE_BLOCK_PLUGINS)."""
    global _COMMANDS_FROM
    from .plugins import get_plugins, register_commands

    state = get_plugins()
    if state is _COMMANDS_FROM:
        return
    _COMMANDS_FROM = state
    register_commands(cli)


def main(argv: list[str] | None = None) -> None:
    from .registry import MedprobeError

    _add_plugin_commands()
    try:
        cli.main(args=argv, prog_name="medprobe", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except MedprobeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
