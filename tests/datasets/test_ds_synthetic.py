"""The embedded synthetic:lesions set: deterministic, lazy, fast, patient-grouped, learnable
but not trivial."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest

import medprobe.datasets.synthetic as synthetic
from medprobe.datasets import open_dataset


def test_images_are_deterministic_per_seed_and_index():
    a = open_dataset("synthetic:lesions?n=12&size=48", seed=1)
    b = open_dataset("synthetic:lesions?n=12&size=48", seed=1)
    c = open_dataset("synthetic:lesions?n=12&size=48", seed=2)
    s = a.samples[4]
    assert np.array_equal(np.asarray(a.load_image(s)), np.asarray(b.load_image(b.samples[4])))
    assert not np.array_equal(np.asarray(a.load_image(s)), np.asarray(c.load_image(c.samples[4])))
    # an image depends on (seed, index) only, not on how many images the set holds
    bigger = open_dataset("synthetic:lesions?n=40&size=48", seed=1)
    same = next(x for x in bigger.samples if x.id == s.id)
    assert same.label == s.label and np.array_equal(np.asarray(bigger.load_image(same)), np.asarray(a.load_image(s)))


def test_opening_renders_nothing(monkeypatch):
    calls = []
    real = synthetic.render
    monkeypatch.setattr(synthetic, "render", lambda *a, **k: calls.append(a) or real(*a, **k))
    ds = open_dataset("synthetic:lesions", seed=0)
    assert calls == [] and len(ds) == 300
    img = ds.load_image(ds.samples[0])
    assert len(calls) == 1 and img.mode == "RGB" and img.size == (224, 224)


def test_a_few_hundred_224px_images_take_seconds():
    ds = open_dataset("synthetic:lesions?n=150")
    start = time.perf_counter()
    for s in ds.samples:
        ds.load_image(s)
    assert time.perf_counter() - start < 10.0  # about 1 s on one core


def test_patients_hold_two_to_four_images_of_one_class():
    ds = open_dataset("synthetic:lesions?n=300&size=32")
    by_patient = defaultdict(list)
    for s in ds.samples:
        by_patient[s.group].append(s)
    sizes = [len(v) for k, v in by_patient.items() if k != ds.samples[-1].group]
    assert min(sizes) >= 2 and max(sizes) <= 4
    assert all(len({s.label for s in v}) == 1 for v in by_patient.values())
    counts = ds.counts()["total"]
    assert set(counts) == {"normal", "round_lesion", "spiculated_lesion"} and min(counts.values()) >= 90


def test_linear_probe_on_a_random_cnn_is_well_above_chance_but_not_perfect():
    torch = pytest.importorskip("torch")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    ds = open_dataset("synthetic:lesions?n=300&size=64", seed=0)
    x = np.stack([np.asarray(ds.load_image(s), dtype=np.float32)[:, :, 0] / 255.0 for s in ds.samples])
    y = np.array([s.label for s in ds.samples])
    train = np.array([s.split == "train" for s in ds.samples])
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 5, 2, 2), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, 2, 1), torch.nn.ReLU(),
    )
    with torch.no_grad():
        fmap = net(torch.from_numpy(x)[:, None])
        feats = torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], 1).numpy()
    scaler = StandardScaler().fit(feats[train])
    probe = LogisticRegression(C=0.1, max_iter=3000).fit(scaler.transform(feats[train]), y[train])
    acc = probe.score(scaler.transform(feats[~train]), y[~train])
    assert 0.45 < acc < 0.97, acc  # chance is 1/3
