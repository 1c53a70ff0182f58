"""Datasets: loaders for the formats medical researchers hold, splits, leakage checks.

::

    from medprobe.datasets import open_dataset
    ds = open_dataset("synthetic:lesions", seed=0)      # or "busi:/data/Dataset_BUSI_with_GT"
    ds.spec, ds.classes, ds.synthetic
    train = ds.by_split("train")
    img = ds.load_image(train[0])                        # RGB PIL image
    ds.split_ids(), ds.fingerprint(), ds.info()

Loaders are looked up by scheme in the plugin registry (``register_datasets`` hook); see
``docs/datasets.md``. This package imports neither torch nor any model library.
"""

from __future__ import annotations

from .api import get_loader, list_loaders, open_dataset
from .base import SPLITS, ArrayDataset, Dataset, DuplicateSet, FileDataset, Sample, ScanResult
from .errors import BadSample, BadSampleError, BadSamplesError, DatasetError, DatasetLayoutError, DatasetSpecError
from .splits import DEFAULT_FRACTIONS

__all__ = [
    "ArrayDataset",
    "BadSample",
    "BadSampleError",
    "BadSamplesError",
    "DEFAULT_FRACTIONS",
    "Dataset",
    "DatasetError",
    "DatasetLayoutError",
    "DatasetSpecError",
    "DuplicateSet",
    "FileDataset",
    "SPLITS",
    "Sample",
    "ScanResult",
    "get_loader",
    "list_loaders",
    "open_dataset",
]
