"""Shared trained runs of the ``medprobe train`` tests (tiny models on the embedded synthetic set).

Each run is made once per session: a fine-tuned timm ResNet-18, a linear head on a frozen timm
ViT-S (through the CLI) and a vision-tower run of MedGemma-4B's tiny SigLIP tower, the last with
its trained layers extracted for the report.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medprobe.cli import cli
from medprobe.tasks.train import train
from medprobe.tasks.training.record import TrainRun

DATA = "synthetic:lesions?n=60&size=64"


@pytest.fixture(scope="session")
def finetune_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "resnet18-finetune"
    return train("resnet18", DATA, out, recipe="finetune", tiny=True, epochs=3, lr=1e-3, batch_size=16,
                 probe_layers=True, progress=False)


@pytest.fixture(scope="session")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "vit-small-linear"
    res = CliRunner().invoke(cli, ["train", "--model", "vit-small-patch16-224", "--dataset", DATA, "--out", str(out),
                                   "--recipe", "linear", "--tiny", "--epochs", "30", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["run"] == str(out)
    return TrainRun.open(out)


@pytest.fixture(scope="session")
def tower_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "medgemma-tower"
    return train("medgemma-4b", DATA, out, recipe="vision-tower", tiny=True, epochs=3, lr=1e-3, batch_size=16,
                 probe_layers=True, progress=False)
