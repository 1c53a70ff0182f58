"""``medprobe train --weights PATH``: a torch checkpoint the test writes (read with
``weights_only=True``) and a safetensors file give the same run as the weights they hold."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from medprobe.adapter import AdapterError
from medprobe.cli import cli
from medprobe.tasks.train import train
from medprobe.tasks.training.record import TrainRun
from medprobe.models.prepare import load_model

from .conftest import DATA

EPOCHS = 20


@pytest.fixture(scope="module")
def tiny_state():
    """The tiny ResNet-18's weights (seed 0): what ``--tiny`` builds, as a plain state dict."""
    return {k: v.clone() for k, v in load_model("resnet18", tiny=True).model.state_dict().items()}


@pytest.fixture(scope="module")
def reference(tiny_state, tmp_path_factory):
    return train("resnet18", DATA, tmp_path_factory.mktemp("w") / "tiny", recipe="linear", tiny=True, epochs=EPOCHS,
                 progress=False)


def _same_results(a: TrainRun, b: TrainRun) -> None:
    for split in ("train", "val", "test"):
        assert a.metrics[split]["accuracy"] == b.metrics[split]["accuracy"], split
        assert a.metrics[split]["confusion"] == b.metrics[split]["confusion"], split
    assert [e["train_loss"] for e in a.log()] == pytest.approx([e["train_loss"] for e in b.log()], rel=1e-5)


def test_torch_checkpoint_weights_only(tiny_state, reference, tmp_path):
    ckpt = tmp_path / "resnet18.pth"
    torch.save({"state_dict": tiny_state, "epoch": torch.tensor(3)}, ckpt)
    torch.load(ckpt, weights_only=True)  # the file is loadable without unpickling code
    run = train("resnet18", DATA, tmp_path / "run", recipe="linear", weights=ckpt, image_size=64, epochs=EPOCHS,
                progress=False)
    assert run.record["model"]["weights"] == f"local:{ckpt.resolve()}"
    assert run.record["synthetic_reasons"] == [f"synthetic dataset ({run.record['dataset']['spec']})"]
    _same_results(run, reference)


def test_safetensors_weights_through_the_cli(tiny_state, reference, tmp_path):
    file = tmp_path / "model.safetensors"
    save_file(tiny_state, str(file))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "-m", "resnet18", "-d", DATA, "--out", str(out), "--recipe", "linear",
                                   "--weights", str(tmp_path), "--image-size", "64", "--epochs", str(EPOCHS)])
    assert res.exit_code == 0, res.output
    assert "test" in res.output and "best epoch" in res.output
    run = TrainRun.open(out)
    assert run.record["model"]["weights"] == f"local:{file.resolve()}"
    _same_results(run, reference)


def test_mismatched_weights_are_named(tiny_state, tmp_path):
    bad = dict(tiny_state)
    bad["layer9.weight"] = bad.pop("layer1.0.conv1.weight")
    file = tmp_path / "bad.safetensors"
    save_file(bad, str(file))
    with pytest.raises(AdapterError, match=r"layer1\.0\.conv1\.weight.*|layer9\.weight"):
        train("resnet18", DATA, tmp_path / "run", recipe="linear", weights=file, image_size=64, progress=False)
