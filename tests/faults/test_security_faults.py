"""Fault corpus rows 71-73: code that must never run. A local checkpoint whose config, processor
and tokenizer point at custom code (``auto_map``), a pickle posing as weights, and a remote-code
model without ``--trust-remote-code``: each is refused with one error and the payload (a file
written by the would-be code) never appears. Runs offline (``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import json
import os
import pickle

import pytest

PAYLOAD = """
import os
open(os.environ["MPF_MARKER"], "a").write("executed\\n")
"""


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "payload-ran"
    monkeypatch.setenv("MPF_MARKER", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.slow
def test_row71_local_checkpoint_with_auto_map_never_runs_its_code(tmp_path, medprobe, marker):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "evil.py").write_text(PAYLOAD)
    (ckpt / "config.json").write_text(json.dumps({
        "model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                     "AutoModelForImageTextToText": "evil.EvilModel"}}))
    (ckpt / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoProcessor": "evil.EvilProcessor", "AutoImageProcessor": "evil.EvilProcessor"},
        "processor_class": "EvilProcessor"}))
    (ckpt / "tokenizer_config.json").write_text(json.dumps({
        "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}, "tokenizer_class": "EvilTokenizer"}))
    runs = tmp_path / "runs"
    result = medprobe("extract", "--model", "lingshu-7b", "--source", ckpt, "--dataset", "synthetic:lesions?n=8&size=32",
                      "--store", runs, "--device", "cpu")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.startswith(f"Error: card 'lingshu-7b': cannot load Qwen2_5_VLForConditionalGeneration from local:{ckpt}: ")
    assert not marker.exists()  # evil.py was never imported
    assert not runs.exists() or not any(runs.iterdir())


def test_row72_pickle_posing_as_timm_weights_is_refused_unexecuted(tmp_path, medprobe, marker):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    runs = tmp_path / "runs"
    with pytest.warns(UserWarning):  # torch notes the pickle protocol before refusing
        result = medprobe("extract", "--model", "resnet18", "--weights", evil, "--dataset", "synthetic:lesions?n=8&size=32",
                          "--store", runs)
    assert result.code == 2
    assert result.err.startswith(f"Error: {evil}: torch.load(weights_only=True) refused this file (it pickles objects "
                                 "other than tensors); re-save its state_dict as safetensors: ")
    assert not marker.exists()
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_row72_pickle_posing_as_open_clip_weights_is_refused_unexecuted(tmp_path, medprobe, marker):
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    with pytest.warns(UserWarning):
        result = medprobe("extract", "--model", "clip-vit-l-14-336", "--weights", evil, "--dataset",
                          "synthetic:lesions?n=8&size=32", "--store", tmp_path / "runs")
    assert result.code == 2
    assert result.err.startswith("Error: card 'clip-vit-l-14-336': open_clip could not load 'ViT-L-14-336': "
                                 "UnpicklingError: Weights only load failed.")
    assert not marker.exists()


def test_row73_remote_code_model_needs_trust_remote_code(tmp_path, medprobe, marker):
    result = medprobe("extract", "--model", "hulu-med-4b", "--dataset", "synthetic:lesions?n=8&size=32", "--store", tmp_path / "runs")
    assert result.code == 2
    assert result.err == "Error: Hulu-Med ships its model code on the hub; pass --trust-remote-code to run it (card 'hulu-med-4b')\n"
    assert not (tmp_path / "runs").exists()
