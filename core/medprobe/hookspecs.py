"""The plugin hooks of medprobe.

Every hook is *register-callback* style (as in simonw/llm): medprobe calls the hook with a
``register`` function and the plugin calls ``register(...)`` once per thing it provides.
Registrations must be cheap: pass data (model cards) or lazy ``"package.module:attr"``
strings, never objects whose creation imports torch. Built-in plugins use exactly these hooks.

A plugin is any module reachable through an entry point in the ``medprobe`` group::

    [project.entry-points.medprobe]
    my_family = "medprobe_my_family.plugin"

and decorating functions in it with :data:`hookimpl`::

    from medprobe import hookimpl

    @hookimpl
    def register_models(register):
        register(ModelCard(id="my-model", kind="mllm", family="my_family", ...))

The hooks, their ``register`` signatures and what the registered object must provide are
listed below; CONTRIBUTING.md says the same in prose, with an example plugin.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("medprobe")
hookimpl = pluggy.HookimplMarker("medprobe")


@hookspec
def register_models(register):
    """Register zoo cards.

    ``register(card: medprobe.cards.ModelCard)``. One call per checkpoint. The card's
    ``family`` names the adapter (see :func:`register_adapters`) that loads it.
    """


@hookspec
def register_adapters(register):
    """Register architecture adapters (family code).

    ``register(family: str, factory: str, description: str = "")`` where ``factory`` is a lazy
    ``"module:attr"`` string naming a :class:`medprobe.adapter.ModelAdapter` subclass. The
    adapter loads checkpoints, builds tiny random models, declares the layer map and prepares
    inputs. Its module is imported only when a model of that family is used.
    """


@hookspec
def register_datasets(register):
    """Register dataset loaders.

    ``register(scheme: str, factory: str, description: str = "")``: ``factory`` is a lazy
    ``"module:attr"`` callable ``factory(location: str, **options) -> medprobe.datasets.Dataset``.
    A dataset spec ``scheme:location`` (e.g. ``imagefolder:/data/busi``) is routed to it.
    """


@hookspec
def register_probes(register):
    """Register probe trainers.

    ``register(name: str, factory: str, description: str = "")``: ``factory`` is a lazy
    ``"module:attr"`` naming a probe class (a ``medprobe.analysis.probes.Probe`` subclass).
    """


@hookspec
def register_metrics(register):
    """Register scores and metrics.

    ``register(name: str, factory: str, description: str = "")``: ``factory`` is a lazy
    ``"module:attr"`` callable computing a per-model score from layer curves (FHS is one).
    """


@hookspec
def register_exporters(register):
    """Register report exporters.

    ``register(fmt: str, factory: str, description: str = "")``: ``factory`` is a lazy
    ``"module:attr"`` callable ``factory(report: dict, out_dir: Path) -> Path`` writing one file.
    """


@hookspec
def register_commands(cli):
    """Add Click commands to the ``medprobe`` CLI: ``cli`` is the top-level ``click.Group``.

    Command modules must not import torch at module level (``medprobe --help`` stays fast).
    """
