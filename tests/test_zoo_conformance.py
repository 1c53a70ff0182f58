"""Every built-in card passes the conformance kit: its layer map resolves on a tiny random model of
the card's class (remote-code families: on the recorded module listing) and, where the model can be
built offline, one capture of every layer returns finite features of the declared widths."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medprobe.plugins import get_plugins, set_plugins
from medprobe.testing import check_model

set_plugins(None)
CARDS = sorted(e.name for e in get_plugins().models if e.origin.distribution == "medprobe")


def test_the_zoo_is_populated():
    kinds = [get_plugins().models.get(c).kind for c in CARDS]
    assert kinds.count("mllm") >= 16 and kinds.count("baseline") >= 26


@pytest.mark.parametrize("card_id", CARDS)
def test_card_conforms(card_id):
    report = check_model(card_id)
    assert report.ok, "\n".join(report.problems)
    assert report.layers >= 2


@pytest.mark.parametrize("card_id", ["lingshu-7b", "medgemma-4b", "llava-1.5-7b", "hulu-med-7b", "resnet50"])
def test_models_layers_cli(card_id):
    from medprobe.cli import cli

    out = CliRunner().invoke(cli, ["models", "layers", card_id, "--tiny", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    stages = {l["stage"] for l in data["layers"]}
    if get_plugins().models.get(card_id).kind == "mllm":
        assert {"vision", "connector", "llm"} <= stages
    assert data["resolved_against"]
