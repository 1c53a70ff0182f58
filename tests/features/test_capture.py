"""Capture engine on hand-built modules whose activations are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medprobe.adapter import Batch
from medprobe.features.capture import Capture, CaptureError, NonFiniteFeatures
from medprobe.layermap import LayerSpec


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


class TupleOut(nn.Module):
    """Returns (tensor, extra) like transformers 4.x decoder layers."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return (x * self.scale, None)


class Toy(nn.Module):
    """x (B, T, C) -> block0 (x*2, tuple) -> block1 (x*3) -> tail (counter)."""

    def __init__(self):
        super().__init__()
        self.block0 = TupleOut(2.0)
        self.block1 = TupleOut(3.0)
        self.tail = Counter()

    def forward(self, x):
        h = self.block0(x)[0]
        h = self.block1(h)[0]
        return self.tail(h)


def spec(id, path, stage="llm", layout="NLC", prefix=0):
    return LayerSpec(id=id, path=path, stage=stage, index=0, layout=layout, prefix_tokens=prefix)


@pytest.fixture
def toy_batch():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4)
    image = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    attn = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    last = torch.zeros(2, 5, dtype=torch.bool)
    last[0, 3] = last[1, 4] = True
    roles = {"image": image, "text": attn & ~image, "last": last}
    return x, Batch(inputs={"x": x}, roles=roles, size=2)


def test_llm_readouts_equal_manual_pooling(toy_batch):
    x, batch = toy_batch
    model = Toy()
    layers = [spec("llm.00", "block0"), spec("llm.01", "block1")]
    with Capture(model, layers, ("image-mean", "last-token", "text-mean")) as cap:
        feats = cap.run(batch, lambda: model(x))
    h1 = x * 6
    assert torch.allclose(feats[("llm.01", "image-mean")][0], h1[0, 1:3].mean(0))
    assert torch.allclose(feats[("llm.01", "image-mean")][1], h1[1, 2:5].mean(0))
    assert torch.allclose(feats[("llm.01", "last-token")], torch.stack([h1[0, 3], h1[1, 4]]))
    assert torch.allclose(feats[("llm.01", "text-mean")][0], h1[0, [0, 3]].mean(0))
    assert torch.allclose(feats[("llm.00", "image-mean")][0], (x * 2)[0, 1:3].mean(0))
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in feats.values())


def test_vision_readouts_cls_and_patch_mean(toy_batch):
    x, batch = toy_batch
    model = Toy()
    with Capture(model, [spec("vision.00", "block0", stage="vision", prefix=1)], ("image-mean", "cls")) as cap:
        feats = cap.run(batch, lambda: model(x))
    assert torch.allclose(feats[("vision.00", "cls")], (x * 2)[:, 0])
    assert torch.allclose(feats[("vision.00", "image-mean")], (x * 2)[:, 1:].mean(1))


def test_early_stop_skips_later_modules(toy_batch):
    x, batch = toy_batch
    model = Toy()
    with Capture(model, [spec("llm.00", "block0")], ("image-mean",)) as cap:
        cap.run(batch, lambda: model(x))
    assert model.tail.calls == 0
    with Capture(model, [spec("llm.00", "block0")], ("image-mean",), stop_early=False) as cap:
        cap.run(batch, lambda: model(x))
    assert model.tail.calls == 1


def test_hooks_are_removed_on_exit_and_after_errors(toy_batch):
    x, batch = toy_batch
    model = Toy()
    with Capture(model, [spec("llm.00", "block0")]) as cap:
        cap.run(batch, lambda: model(x))
    assert not model.block0._forward_hooks
    with pytest.raises(CaptureError):
        with Capture(model, [spec("llm.00", "block0")], ("image-mean",)) as cap:
            cap.run(Batch(inputs={}, roles={}, size=2), lambda: model(x))  # no image role
    assert not model.block0._forward_hooks


def test_errors_name_the_layer(toy_batch):
    x, batch = toy_batch
    model = Toy()
    with pytest.raises(CaptureError, match="not found"):
        Capture(model, [spec("llm.09", "nope")]).__enter__()
    with pytest.raises(CaptureError, match="llm.00.*image"):
        with Capture(model, [spec("llm.00", "block0")], ("image-mean",)) as cap:
            cap.run(Batch(inputs={}, roles={}, size=2), lambda: model(x))
    with pytest.raises(CaptureError, match="never ran"):
        with Capture(model, [spec("llm.00", "block0"), spec("llm.01", "block1")], ("image-mean",)) as cap:
            cap.run(batch, lambda: model.block0(x))


def test_module_running_twice_is_an_error(toy_batch):
    x, batch = toy_batch
    model = Toy()
    with pytest.raises(CaptureError, match="ran twice"):
        with Capture(model, [spec("llm.00", "block0")], ("image-mean",), stop_early=False) as cap:
            cap.run(batch, lambda: (model(x), model(x)))


def test_non_finite_values_are_reported_with_rows(toy_batch):
    x, batch = toy_batch
    x = x.clone()
    x[1, 2, 0] = float("inf")
    model = Toy()
    with pytest.raises(NonFiniteFeatures) as info:
        with Capture(model, [spec("llm.00", "block0")], ("image-mean", "last-token")) as cap:
            cap.run(batch, lambda: model(x))
    assert info.value.rows == {("llm.00", "image-mean"): [1]}
    assert "bf16" in str(info.value)


def test_nchw_and_packed_layouts():
    conv = nn.Sequential(nn.Identity())
    x = torch.randn(3, 4, 5, 6)
    with Capture(conv, [spec("stage.0", "0", stage="cnn", layout="NCHW")]) as cap:
        feats = cap.run(Batch(inputs={}, size=3), lambda: conv(x))
    assert torch.allclose(feats[("stage.0", "image-mean")], x.mean(dim=(2, 3)))

    packed_model = nn.Sequential(nn.Identity())
    tokens = torch.randn(10, 4)  # image 0 has 4 tokens, image 1 has 6
    batch = Batch(inputs={}, packed={"vision": [4, 6]}, size=2)
    with Capture(packed_model, [spec("vision.00", "0", stage="vision", layout="packed")]) as cap:
        feats = cap.run(batch, lambda: packed_model(tokens))
    expect = torch.stack([tokens[:4].mean(0), tokens[4:].mean(0)])
    assert torch.allclose(feats[("vision.00", "image-mean")], expect)
    with pytest.raises(CaptureError, match="do not sum"):
        with Capture(packed_model, [spec("vision.00", "0", stage="vision", layout="packed")]) as cap:
            cap.run(Batch(inputs={}, packed={"vision": [4, 5]}, size=2), lambda: packed_model(tokens))


def test_features_are_copies_not_views():
    model = nn.Sequential(nn.Identity())
    x = torch.randn(2, 3)
    with Capture(model, [spec("head", "0", stage="head", layout="NC")]) as cap:
        feats = cap.run(Batch(inputs={}, size=2), lambda: model(x))
    x.add_(1.0)
    assert not torch.allclose(feats[("head", "image-mean")], x)
