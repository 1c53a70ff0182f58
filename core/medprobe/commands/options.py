"""Options shared by commands, declared once.

``@load_options()`` adds the options that say which model, how (:class:`~medprobe.models.prepare.LoadOptions`)
and hands the command one value, ``load``::

    @click.command()
    @click.option("--model", "-m", required=True)
    @load_options()
    def extract(model, load):          # load: LoadOptions(tiny=..., device=..., lora=...)
        ...

The other conventions every command follows (README "CLI conventions"), declared here too:
Options every command spells and means the same way (README "CLI conventions").

* ``--store DIR``: the root holding keyed run directories (extract, classify, compare's runs,
  ``cache``); default ``$MEDPROBE_CACHE_DIR``, else ``./runs``.
* ``--out DIR``: the folder this command's own result is written into (a train / zeroshot run, a
  finetune adapter, a report). On extract / classify ``--out`` is the old spelling of ``--store``.
* ``--limit N``, ``--skip-bad``: on every command that reads a dataset (the count of skipped
  undecodable samples is printed).
* ``--json``: on every command that produces a result: the summary as JSON on stdout.
* ``--force``: redo even when a result with the same key exists (old spellings ``--no-resume``,
  ``--overwrite``).
* ``--probe NAMES``: one probe, a comma list (``linear,mlp``) or ``all``.

Old spellings stay for one release as hidden aliases that print a deprecation note on stderr.
Names are validated when the command line is parsed -- before any model is loaded -- and a
mistyped name gets the close ones (:func:`medprobe.cli.did_you_mean`).

Nothing here imports torch.

``exclude`` drops options a command cannot honour (the option is then refused by click as
unknown, instead of being silently ignored); ``dtype_default`` changes the default of ``--dtype``
(``train`` chooses it per recipe when left unset). This module imports no torch.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
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


# -- close names for typos -----------------------------------------------------------------------


def close_names(name: str, choices: "list[str] | tuple[str, ...] | set[str]", n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` closest to the mistyped ``name`` (difflib ratio >= 0.6, and names
    that start with what was typed), best first."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    prefixed = [c for c in choices if name and c.startswith(name) and c not in close]
    return (close + prefixed)[:n]


def did_you_mean(name: str, choices: "list[str] | tuple[str, ...] | set[str]") -> str:
    """``" Did you mean 'models'?"`` (or ``" Did you mean one of 'a', 'b'?"``); ``""`` when no name is close."""
    close = close_names(name, choices)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean '{close[0]}'?"
    return " Did you mean one of " + ", ".join(f"'{c}'" for c in close) + "?"


# -- the other shared conventions -------------------------------------------------------------

#: deprecated spelling -> (canonical parameter, value to set), collected while parsing
_META = "medprobe.deprecated"
#: the release the old spellings disappear in
REMOVAL = "the next release"


def deprecation_note(old: str, new: str) -> str:
    return f"note: '{old}' is deprecated and will be removed in {REMOVAL}; use '{new}'"


def deprecated_option(old: str, new: str, param: str, value: Any = None, *, flag: bool = False, **kwargs: Any):
    """A hidden option ``old`` kept for one release: prints a deprecation note naming ``new`` and
    sets the command's parameter ``param`` (to ``value`` for a flag, else to the given value).
    The command function must be wrapped by :func:`honour_deprecated`."""

    def remember(ctx: click.Context, _param: click.Parameter, given: Any) -> Any:
        if given is None or (flag and not given):
            return given
        click.echo(deprecation_note(old, new), err=True)
        ctx.meta.setdefault(_META, {})[param] = value if flag else given
        return given

    dest = "_deprecated_" + re.sub(r"\W", "_", old.lstrip("-"))
    if flag:
        kwargs.setdefault("is_flag", True)
        kwargs.setdefault("default", False)
    return click.option(old, dest, hidden=True, expose_value=False, callback=remember, **kwargs)


def honour_deprecated(f: Callable[..., Any]) -> Callable[..., Any]:
    """Apply what deprecated spellings set (:func:`deprecated_option`) to the command's parameters."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        kwargs.update(ctx.meta.get(_META, {}))
        return f(*args, **kwargs)

    return wrapper


# -- the store root ------------------------------------------------------------------------


def store_root(value: str | Path | None = None) -> Path:
    """``value``, else ``$MEDPROBE_CACHE_DIR``, else ``./runs`` (:func:`medprobe.api.default_cache_root`)."""
    from ..api import default_cache_root

    return Path(value) if value else default_cache_root()


def store_option(*, old_out: bool = False, old_root: bool = False):
    """``--store DIR`` (default ``$MEDPROBE_CACHE_DIR``, else ``./runs``) as the parameter ``store``;
    ``old_out`` / ``old_root``: also accept the deprecated ``--out`` / ``--root`` spellings."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--store", "store", default=None, type=click.Path(file_okay=False), metavar="DIR",
                         help="Store root holding the keyed run directories "
                              "[default: $MEDPROBE_CACHE_DIR, else ./runs].")(f)  # fmt: skip
        if old_out:
            f = deprecated_option("--out", "--store", "store", type=click.Path(file_okay=False))(f)
        if old_root:
            f = deprecated_option("--root", "--store", "store", type=click.Path(file_okay=False))(f)
        return f

    return deco


# -- datasets ------------------------------------------------------------------------------

SKIP_BAD_HELP = "Skip undecodable or mislabelled files (the count is printed and recorded) instead of failing."


def skip_bad_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--skip-bad", "skip_bad", is_flag=True, default=False, help=SKIP_BAD_HELP)(f)


def limit_option(help: str = "Use a deterministic subset of N samples (pipeline checks, quick looks).") -> Callable:
    return click.option("--limit", "limit", default=None, type=click.IntRange(min=1), metavar="N", help=help)


def dataset_spec(spec: str, *, skip_bad: bool = False, limit: int | None = None) -> str:
    """``spec`` with ``skip_bad=1`` / ``limit=N`` added to its query (as ``?skip_bad=1`` in the
    spec itself does); an option the spec already sets is left as the spec says."""
    from ..datasets.spec import parse_spec

    _scheme, _location, query = parse_spec(spec)
    extra = []
    if skip_bad and "skip_bad" not in query:
        extra.append("skip_bad=1")
    if limit is not None and "limit" not in query:
        extra.append(f"limit={int(limit)}")
    if not extra:
        return spec
    return spec + ("&" if "?" in spec else "?") + "&".join(extra)


def open_dataset_for(spec: str, *, skip_bad: bool = False, limit: int | None = None) -> Any:
    """Open ``spec`` (with ``--skip-bad`` / ``--limit`` applied) and print how many bad samples were
    skipped, so the command passes the opened dataset on and the count is always shown."""
    from ..datasets import open_dataset

    ds = open_dataset(dataset_spec(spec, skip_bad=skip_bad, limit=limit))
    echo_skipped(getattr(ds, "skipped", []) or [])
    return ds


def echo_skipped(skipped: list[Any]) -> None:
    """Print ``skipped N undecodable sample(s) (--skip-bad): id (reason), ...`` on stderr (nothing when none)."""
    if not skipped:
        return
    shown = []
    for b in skipped[:3]:
        sid, reason = (b[0], b[1]) if isinstance(b, (list, tuple)) else (getattr(b, "id", b), getattr(b, "reason", ""))
        shown.append(f"{sid} ({reason})" if reason else str(sid))
    more = f", ... ({len(skipped) - 3} more)" if len(skipped) > 3 else ""
    click.echo(f"skipped {len(skipped)} bad sample(s) (--skip-bad): " + ", ".join(shown) + more, err=True)


#: how MLLMs answer the closed-set question when a command computes P_final (classify, compare):
#: the paper scores the model's own generated answers
DEFAULT_CLASSIFY_MODE = "generate"
CLASSIFY_MODE_HELP = ("How the MLLM answers for P_final: generate = greedy answers, parsed (the paper's P_final); "
                      "score = log-likelihood of each class answer (one prompt pass per image, faster).")


# -- output and redo -----------------------------------------------------------------------


def json_option(help: str = "Print the result summary as JSON on stdout.") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


def force_option(help: str, *, old_no_resume: bool = False, old_overwrite: bool = False):
    """``--force`` (parameter ``force``); ``old_no_resume`` / ``old_overwrite`` keep the deprecated
    ``--no-resume`` / ``--overwrite`` spellings (``--resume``, the old default, is accepted silently)."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--force", "force", is_flag=True, help=help)(f)
        if old_no_resume:
            f = deprecated_option("--no-resume", "--force", "force", True, flag=True)(f)
            f = click.option("--resume", "_resume_default", is_flag=True, hidden=True, expose_value=False)(f)
        if old_overwrite:
            f = deprecated_option("--overwrite", "--force", "force", True, flag=True)(f)
        return f

    return deco


# -- names checked before anything is loaded -----------------------------------------------


def _names(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def check_probes(ctx: click.Context | None, param: Any, value: str | None) -> str | None:
    """``--probe``: known probe names (``linear``, ``mlp``, plugins' probes) or ``all``, comma-separated."""
    if value is None:
        return value
    from ..tasks.pipeline import PROBES

    known = list(PROBES) + ["all"]
    try:
        from ..plugins import get_plugins

        known += [p for p in get_plugins().probes.names() if p not in known]
    except Exception:  # a broken plugin must not break the option check
        pass
    names = _names(value)
    if not names:
        raise click.BadParameter("name a probe: " + ", ".join(known))
    for name in names:
        if name not in known:
            raise click.BadParameter(f"unknown probe '{name}'.{did_you_mean(name, known)} Choose from {', '.join(known)}, "
                                     "or a comma list (linear,mlp).")  # fmt: skip
    return ",".join(names)


def probe_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--probe", "probe", default="linear", show_default=True, callback=check_probes, metavar="NAMES",
                        help="Probe(s): linear, mlp, all, or a comma list (linear,mlp).")(f)  # fmt: skip


def check_readouts(ctx: click.Context | None, param: Any, value: str | None) -> str | None:
    """``--readout``: names of :data:`medprobe.features.readouts.READOUTS`, comma-separated."""
    if value is None:
        return value
    from ..features.readouts import READOUTS

    for name in _names(value):
        if name not in READOUTS:
            raise click.BadParameter(f"unknown readout '{name}'.{did_you_mean(name, READOUTS)} "
                                     f"Choose from {', '.join(READOUTS)} (comma-separated).")  # fmt: skip
    return value


#: what a layer pattern may contain: ids (``llm.12``), stage / module names, fnmatch wildcards
_LAYER_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]!:/-]+$")


def check_layers(ctx: click.Context | None, param: Any, value: str | None) -> str | None:
    """``--layers``: comma-separated layer ids, stage / module names or fnmatch patterns. Checked
    here, before any model is loaded, for form (empty parts, spaces, stray characters) and for
    matching some canonical layer id or stage name (:func:`medprobe.layermap.check_patterns`: a
    misspelt ``vison.*`` is refused with the close names); that each pattern matches a layer of
    *this* model is checked as soon as its layer map is known, with close ids suggested
    (:meth:`medprobe.layermap.LayerMap.select`)."""
    if value is None:
        return value
    parts = [p.strip() for p in value.split(",")]
    if not any(parts) or any(not p for p in parts):
        raise click.BadParameter(f"'{value}' has an empty pattern; write e.g. 'vision.*,connector,llm.*'")
    bad = [p for p in parts if not _LAYER_PATTERN.match(p)]
    if bad:
        raise click.BadParameter(f"'{bad[0]}' is not a layer pattern (ids like llm.12, stage names like vision, "
                                 "wildcards * ? [..]); list a model's layers with 'medprobe models layers REF --tiny'")  # fmt: skip
    from ..layermap import check_patterns

    check_patterns(parts, option=param.opts[0] if param is not None else "--layers")  # one line, printed by cli.main
    return value


def layers_option(help: str = "Layer patterns, e.g. 'vision.*,connector,llm.*' (default: all).", dest: str = "layers",
                  flag: str = "--layers", **kwargs: Any):
    """A layer-pattern option (``--layers``; ``flag`` / ``dest`` rename it), checked by :func:`check_layers`."""
    return click.option(flag, dest, default=None, callback=check_layers, metavar="PATTERNS", help=help,
                        **kwargs)  # fmt: skip


def readout_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--readout", "readouts", default="image-mean,last-token", show_default=True,
                        callback=check_readouts, metavar="NAMES",
                        help="Readouts, comma-separated: image-mean, cls, last-token, text-mean.")(f)  # fmt: skip


# -- what happened to a run ----------------------------------------------------------------


def echo_outcome(outcome: dict[str, Any] | None, path: Any) -> None:
    """One line saying whether the run was made, reused or resumed (``Run.outcome``)."""
    if not outcome:
        return
    status = outcome.get("status")
    if status == "reused":
        click.echo(f"reused: a finished run with the same key already exists ({path}); nothing recomputed "
                   "(--force starts it over)")  # fmt: skip
    elif status == "resumed":
        click.echo(f"resumed at row {outcome['from_row']} of {outcome['rows']} (rows before it were kept from the "
                   "interrupted run)")  # fmt: skip
    elif status == "new":
        click.echo(f"extracted {outcome['rows']} rows (new run)")


def class_counts(samples: list[Any]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for s in samples:
        counts[s.label] = counts.get(s.label, 0) + 1
    return counts


def check_probeable_subset(ds: Any, *, limit: int | None, seed: int) -> str | None:
    """Before any model is loaded: refuse a subset (``--limit``) that no probe could use (fewer than
    two classes), naming the smallest limit that works. Returns a warning (the command prints it
    after the run is written) when the smallest class has fewer samples than the default
    cross-fitted protocol's folds (``probe --protocol cv --k 5``), or ``None``."""
    from ..analysis.protocol import DEFAULT_K
    from ..features.provenance import select_samples as _subset  # the subset extract takes
    from ..registry import MedprobeError

    samples = _subset(list(ds.samples), limit, seed)
    counts = class_counts(samples)
    classes = list(getattr(ds, "classes", []) or [])
    what = f"--limit {limit}" if limit is not None else f"dataset '{ds.spec}'"
    if len(counts) < 2:
        minimum = next((n for n in range(len(samples) + 1, len(ds.samples) + 1)
                        if len(class_counts(_subset(list(ds.samples), n, seed))) >= 2), None)
        way = f"use --limit {minimum} or more" if minimum else "the dataset itself cannot be probed"
        raise MedprobeError(f"{what} leaves {len(counts)} class(es) ({len(samples)} samples): a probe needs at least "
                            f"two classes, so 'medprobe probe' would fail; {way}")  # fmt: skip
    smallest = min(counts, key=lambda c: (counts[c], c))
    if counts[smallest] < DEFAULT_K:
        name = classes[smallest] if smallest < len(classes) else str(smallest)
        return (f"warning: {what}: class '{name}' has {counts[smallest]} sample(s); the default cross-fitted probe "
                f"(--protocol cv --k {DEFAULT_K}) needs {DEFAULT_K} per class: probe with a smaller --k (at least 3) "
                "or --protocol split, or extract more samples")
    return None
