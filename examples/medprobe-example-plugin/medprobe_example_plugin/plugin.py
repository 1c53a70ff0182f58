"""Registers the example card and adapter (no torch import here)."""

from medprobe import hookimpl
from medprobe.cards import ModelCard


@hookimpl
def register_models(register):
    register(
        ModelCard(
            id="example-cnn",
            kind="baseline",
            family="example_cnn",
            title="Example three-stage CNN",
            architecture="ExampleCNN",
            loader="stock",
            category="cnn",
            params="0.02M",
            license="Apache-2.0",
            notes="Demonstration plugin; random or locally trained weights only.",
            sources={"architecture": "medprobe_example_plugin/adapter.py"},
        )
    )


@hookimpl
def register_adapters(register):
    register("example_cnn", "medprobe_example_plugin.adapter:ExampleCNNAdapter", "Three-stage demo CNN")
