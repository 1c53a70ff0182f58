"""open_dataset: specs, options, routing through the plugin registry, third-party loaders."""

from __future__ import annotations

import types

import numpy as np
import pytest

from medprobe import hookimpl
from medprobe.datasets import ArrayDataset, DatasetSpecError, Sample, open_dataset
from medprobe.datasets.spec import parse_spec
from medprobe.plugins import discover, get_plugins, set_plugins
from medprobe.registry import MedprobeError, NotFoundError


def test_builtin_schemes_are_registered_by_the_datasets_plugin():
    registry = get_plugins().datasets
    for scheme in ("synthetic", "digits", "imagefolder", "csv", "medmnist", "busi", "chest-xray", "covid-ct"):
        entry = registry.entry(scheme)
        assert entry.origin.plugin == "datasets" and isinstance(entry.value, str)


def test_parse_spec():
    assert parse_spec("digits") == ("digits", "", {})
    assert parse_spec("synthetic:lesions?n=120&size=64") == ("synthetic", "lesions", {"n": "120", "size": "64"})
    assert parse_spec("imagefolder:/data/a b?classes=x,y") == ("imagefolder", "/data/a b", {"classes": "x,y"})
    with pytest.raises(DatasetSpecError, match="does not start with a loader scheme"):
        parse_spec("/data/busi")
    with pytest.raises(DatasetSpecError, match="option 'n' given twice"):
        parse_spec("synthetic:lesions?n=1&n=2")


def test_spec_is_normalised_and_round_trips():
    ds = open_dataset("synthetic:lesions", seed=0)
    assert ds.spec == "synthetic:lesions?n=300&size=224&seed=0"
    small = open_dataset("synthetic:lesions?size=32", n=30, seed=2, dedup=True, limit=12)
    assert small.spec == "synthetic:lesions?n=30&size=32&seed=2&dedup=1&limit=12"
    again = open_dataset(small.spec)
    assert again.fingerprint() == small.fingerprint() and len(again) == 12


def test_option_errors_name_the_loader_and_the_options():
    with pytest.raises(NotFoundError, match="dataset loader 'imagefoldr' not found; did you mean: imagefolder"):
        open_dataset("imagefoldr:/x")
    with pytest.raises(DatasetSpecError, match=r"unknown option\(s\) colour; accepted: n, size, seed, dedup, skip_bad, limit, fractions"):
        open_dataset("synthetic:lesions?colour=red")
    with pytest.raises(DatasetSpecError, match=r"option 'n=many' is not valid"):
        open_dataset("synthetic:lesions?n=many")
    with pytest.raises(DatasetSpecError, match="seed=1 conflicts with seed=2"):
        open_dataset("synthetic:lesions?seed=1", seed=2)
    with pytest.raises(DatasetSpecError, match="split fractions must be"):
        open_dataset("digits?fractions=0.5,0.6,0.1")
    with pytest.raises(MedprobeError, match="unknown synthetic set 'tumours'; available: lesions"):
        open_dataset("synthetic:tumours")
    with pytest.raises(MedprobeError, match="imagefolder: '/definitely/not/here' does not exist"):
        open_dataset("imagefolder:/definitely/not/here")
    with pytest.raises(MedprobeError, match="imagefolder' needs a folder: use 'imagefolder:PATH'"):
        open_dataset("imagefolder")


def toy_loader(location: str, n: int = 6) -> ArrayDataset:
    """A third-party loader: ``n`` random 16x16 images, two classes, a location echoed in ids."""
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    samples = [Sample(f"{location}-{i}", i % 2, "train" if i < n - 2 else "test") for i in range(n)]
    return ArrayDataset(
        "toy", ["even", "odd"], samples, arrays={"x": images}, index={s.id: ("x", i) for i, s in enumerate(samples)}, location=location
    )


def duplicate_ids(location: str) -> ArrayDataset:
    ds = toy_loader(location)
    ds.samples.append(ds.samples[0])
    return ds


@pytest.fixture
def third_party():
    plugin = types.ModuleType("medprobe_toy_plugin")

    @hookimpl
    def register_datasets(register):
        register("toy", toy_loader, "a toy loader from a third-party plugin")
        register("broken", "medprobe_toy_plugin_missing.loader:load", "a loader whose module is missing")
        register("toy-dups", duplicate_ids, "a faulty loader returning one sample twice")

    plugin.register_datasets = register_datasets
    set_plugins(discover(extra_plugins=[("toy", plugin)]))
    yield
    set_plugins(None)


def test_third_party_plugins_add_schemes_through_the_hook(third_party):
    ds = open_dataset("toy:here?n=8")
    assert ds.spec == "toy:here?n=8&seed=0" and ds.split_method == "official+carved(val from train)"
    assert ds.counts()["test"] == {"even": 1, "odd": 1}
    assert ds.load_image(ds.samples[0]).mode == "RGB"
    assert open_dataset("synthetic:lesions?n=6&size=16").synthetic  # built-ins still there
    from medprobe.datasets import list_loaders

    toy = next(d for d in list_loaders() if d["scheme"] == "toy")
    assert toy["plugin"].startswith("plugin 'toy'") and toy["factory"].endswith(":toy_loader")
    with pytest.raises(DatasetSpecError, match="dataset loader 'broken' from plugin 'toy'.*cannot be imported"):
        open_dataset("broken:x")


def test_loader_output_is_checked(third_party):
    with pytest.raises(MedprobeError, match="sample id 'x-0' occurs twice"):
        open_dataset("toy-dups:x")


def test_every_sample_has_a_split_and_info_is_json_ready(tmp_path):
    import json

    ds = open_dataset("digits?size=16", limit=60)
    assert all(s.split in ("train", "val", "test") for s in ds.samples)
    info = json.loads(json.dumps(ds.info()))
    assert info["num_samples"] == 60 and info["fingerprint"] == ds.fingerprint()
    assert sum(sum(v.values()) for k, v in info["counts"].items() if k != "total") == 60
