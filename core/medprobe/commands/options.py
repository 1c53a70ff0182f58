"""Options shared by commands, declared once.

``@load_options()`` adds the options that say which model, how (:class:`~medprobe.models.prepare.LoadOptions`)
and hands the command one value, ``load``::

    @click.command()
    @click.option("--model", "-m", required=True)
    @load_options()
    def extract(model, load):          # load: LoadOptions(tiny=..., device=..., lora=...)
        ...

``exclude`` drops options a command cannot honour (the option is then refused by click as
unknown, instead of being silently ignored); ``dtype_default`` changes the default of ``--dtype``
(``train`` chooses it per recipe when left unset). This module imports no torch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

DTYPES = ("auto", "bf16", "fp16", "fp32")

#: LoadOptions field -> (click parameter declarations, click keyword arguments)
_LOAD: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "tiny": (("--tiny",), dict(is_flag=True, help="Tiny random model of the card's class (offline pipeline check; not a finding).")),
    "seed": (("--seed",), dict(default=0, show_default=True, type=int,
                               help="Seed of the tiny / random weights and of the sample subset (--limit).")),
    "source": (("--source",), dict(default=None, help="Hub id or local checkpoint directory overriding the card's hub id.")),
    "revision": (("--revision",), dict(default=None, help="Hub revision (branch, tag or commit).")),
    "weights": (("--weights",), dict(default=None, type=click.Path(exists=True), help="Local weights file or directory (baselines).")),
    "random_init": (("--random-init",), dict(is_flag=True, help="The architecture and config with seeded random weights (--seed): the random-weights twin, a control; MLLMs read only the config of --source or the card's hub id.")),
    "trust_remote_code": (("--trust-remote-code",), dict(is_flag=True, help="Allow model code from the hub (e.g. Hulu-Med); never implied.")),
    "lora": (("--lora", "--adapter"), dict(default=None, type=click.Path(exists=True, file_okay=False),
                                         help="peft LoRA adapter directory to apply (e.g. from `medprobe finetune`); part of the run key. "
                                              "--adapter is the older spelling.")),
    "merge_lora": (("--merge-lora", "--merge-adapter"), dict(is_flag=True, help="Fold the --lora weights into the model instead of wrapping layers.")),
    "device": (("--device",), dict(default="auto", show_default=True, help="auto | cpu | cuda:N")),
    "dtype": (("--dtype",), dict(default="auto", show_default=True, type=click.Choice(DTYPES),
                                 help="Model dtype (auto: bf16 on a bf16-capable GPU, else fp32).")),
    "device_map": (("--device-map",), dict(default=None, help="Spread a large model over the GPUs (accelerate), e.g. 'auto'.")),
    "max_memory": (("--max-memory",), dict(multiple=True, metavar="DEVICE=SIZE",
                                           help="Memory limit per device with --device-map, e.g. 0=70GiB 1=70GiB cpu=200GiB (repeatable).")),
    "image_size": (("--image-size",), dict(default=None, type=int, help="Input side for real weights (timm, open_clip, Qwen-VL).")),
}
#: the parameter name each option arrives under (before it is folded into ``load``)
_PARAM = {name: "load_" + name for name in _LOAD}


def load_options(*, exclude: tuple[str, ...] = (), dtype_default: str | None = "auto") -> Callable[[Callable], Callable]:
    """Decorator: the :class:`~medprobe.models.prepare.LoadOptions` click options, folded into one
    ``load`` keyword argument of the command."""
    unknown = set(exclude) - set(_LOAD)
    if unknown:
        raise ValueError(f"unknown load options to exclude: {sorted(unknown)}")
    names = [n for n in _LOAD if n not in exclude]

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from ..models.prepare import LoadOptions

            values = {name: kwargs.pop(_PARAM[name]) for name in names}
            if "max_memory" in values:
                if values["max_memory"]:
                    from ..grid.resources import parse_max_memory

                    values["max_memory"] = parse_max_memory(values["max_memory"])
                else:
                    values["max_memory"] = None
            if values.get("merge_lora") and values.get("lora") is None:
                raise click.UsageError("--merge-lora needs --lora DIR (in the older spelling: --merge-adapter needs --adapter DIR)")
            if values.get("dtype") is None:
                values.pop("dtype")
            kwargs["load"] = LoadOptions(**values)
            return fn(*args, **kwargs)

        for name in reversed(names):
            decls, attrs = _LOAD[name]
            attrs = dict(attrs)
            if name == "dtype" and dtype_default != "auto":
                attrs["default"] = dtype_default
                attrs["show_default"] = dtype_default is not None
            wrapper = click.option(*decls, _PARAM[name], **attrs)(wrapper)
        return wrapper

    return decorate


__all__ = ["load_options", "DTYPES"]
