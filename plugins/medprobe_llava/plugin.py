"""Registers the ``llava`` adapter (lazy; imports no torch) and the ``medprobe convert`` command."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "llava",
        "medprobe_llava.adapter:LlavaAdapter",
        "LLaVA (LlavaForConditionalGeneration; Llama/Mistral/Qwen2 text): CLIP -> MLP projector -> LLM",
    )


@hookimpl
def register_commands(cli):
    # click only: the conversion code (and torch) is imported when the command runs
    from .commands import convert

    cli.add_command(convert)
