"""The feature store: one run directory per (model, weights, dataset, split, layers, readouts,
preprocessing, dtype, code version), written shard by shard, resumable, memory-mapped on read.

Layout of a run directory::

    RUN/
      manifest.json                 # see below; rewritten atomically after every shard
      .lock                         # file lock: one writer per run
      shards/shard-000000.safetensors   # while extracting: rows [start, stop) of every layer
      features/<layer>__<readout>.safetensors   # when complete: one (N, D) float32 tensor "features"
      samples.safetensors           # "labels" (N,) int64 and "split" (N,) uint8 (0 train, 1 val, 2 test)

``manifest.json`` holds ``format`` (:data:`FORMAT`), ``run_key`` (sha256 of :func:`run_key_payload`),
``status`` (``incomplete`` | ``complete``), the model card, weights, adapter and version,
the dataset spec, classes, fingerprint and sample ids (row order of every feature file), the
selected layers (LayerSpec dicts) and readouts, preprocessing, dtype, device, batch size, seed,
prompt, package versions, git hash, the synthetic flags, and every shard / feature file with its
sha256. Writes go to a temporary file in the same folder, are fsync'ed and renamed into place.

Reading::

    run = Run.open("runs/lingshu-7b__lesions__3f2a...")
    X = run.features("llm.03", "image-mean")    # np.memmap (N, D) float32, only that file is read
    y, split = run.labels, run.splits             # (N,), (N,) of "train" | "val" | "test"
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..registry import MedprobeError

FORMAT = "medprobe.run/1"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES = np.array(["train", "val", "test"])
MANIFEST = "manifest.json"


class StoreError(MedprobeError):
    """A run directory is missing, corrupt, or from another format; names the path."""


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def run_key(payload: Mapping[str, Any]) -> str:
    """Content hash of everything that changes the features."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def _save_tensors(path: Path, tensors: Mapping[str, np.ndarray]) -> str:
    """Write numpy arrays as safetensors atomically; return the file's sha256."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U8": np.uint8, "F16": np.float16, "I32": np.int32}


def memmap_tensor(path: Path, name: str) -> np.memmap:
    """Memory-map one tensor of a safetensors file (read-only, nothing else is read)."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
    except (OSError, struct.error, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not a readable safetensors file ({exc})") from None
    if name not in header:
        raise StoreError(f"{path}: no tensor '{name}' (has {sorted(k for k in header if k != '__metadata__')})")
    info = header[name]
    dtype = _DTYPES.get(info["dtype"])
    if dtype is None:
        raise StoreError(f"{path}: unsupported dtype {info['dtype']}")
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if end == begin:
        return np.zeros(shape, dtype=dtype)  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_len + begin, shape=shape)


def feature_file_name(layer_id: str, readout: str) -> str:
    return f"{layer_id}__{readout}.safetensors"


def read_record(
    directory: str | Path,
    filename: str,
    fmt: str,
    what: str,
    error: type[MedprobeError] = StoreError,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Read ``directory/filename`` (a JSON record of format ``fmt``) or raise ``error`` naming the
    file: missing ("not a medprobe <what>"), not JSON, wrong format, or missing ``required`` keys."""
    path = Path(directory) / filename
    if not path.is_file():
        raise error(f"{directory}: not a medprobe {what} (no {filename})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: corrupt record, not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise error(f"{path}: format {got!r}, expected {fmt!r}")
    missing = [k for k in required if k not in record]
    if missing:
        raise error(f"{path}: missing field(s) {missing}")
    return record


@dataclass
class Run:
    """A run directory opened for reading."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        return cls(path, read_record(path, MANIFEST, FORMAT, "run"))

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def key(self) -> str:
        return self.manifest["run_key"]

    @property
    def model_id(self) -> str:
        return self.manifest["model"]["card"]["id"]

    @property
    def sample_ids(self) -> list[str]:
        return list(self.manifest["dataset"]["sample_ids"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["dataset"]["classes"])

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest["layers"])

    @property
    def feature_keys(self) -> list[tuple[str, str]]:
        """(layer id, readout) pairs present, in model order."""
        return [tuple(f["key"].split("/", 1)) for f in self.manifest.get("features", [])]  # type: ignore[misc]

    def _require_complete(self) -> None:
        if not self.complete:
            raise StoreError(f"{self.path}: run is incomplete ({self.manifest.get('rows_done', 0)} of "
                             f"{len(self.sample_ids)} rows); rerun the same extract command to resume")

    @property
    def labels(self) -> np.ndarray:
        self._require_complete()
        return np.asarray(memmap_tensor(self.path / "samples.safetensors", "labels"))

    @property
    def splits(self) -> np.ndarray:
        self._require_complete()
        return SPLIT_NAMES[np.asarray(memmap_tensor(self.path / "samples.safetensors", "split"))]

    def features(self, layer_id: str, readout: str = "image-mean") -> np.memmap:
        """(N, D) float32, memory-mapped; rows follow :attr:`sample_ids`."""
        self._require_complete()
        name = feature_file_name(layer_id, readout)
        if f"{layer_id}/{readout}" not in {f["key"] for f in self.manifest.get("features", [])}:
            raise StoreError(f"{self.path}: no features for layer '{layer_id}' readout '{readout}'")
        return memmap_tensor(self.path / "features" / name, "features")

    def iter_features(self) -> Iterator[tuple[str, str, np.memmap]]:
        for layer_id, readout in self.feature_keys:
            yield layer_id, readout, self.features(layer_id, readout)

    def verify(self) -> list[str]:
        """Recompute every checksum in the manifest; return the problems found (empty = intact)."""
        problems = []
        entries = list(self.manifest.get("features", [])) + list(self.manifest.get("shards", []))
        if self.complete:
            entries.append(self.manifest["samples_file"])
        for entry in entries:
            path = self.path / entry["file"]
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif sha256_file(path) != entry["sha256"]:
                problems.append(f"{path}: checksum mismatch")
        return problems


class RunWriter:
    """Writes one run directory shard by shard (used by :func:`medprobe.features.extract.extract`).

    ``rows_done`` tells where a resumed extraction starts. Call :meth:`write_shard` with the rows
    ``[rows_done, rows_done + n)`` and :meth:`finalize` once all rows are written.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @classmethod
    def create_or_resume(cls, path: Path, manifest: dict[str, Any], resume: bool = True) -> "RunWriter":
        mpath = path / MANIFEST
        if mpath.is_file() and resume:
            old = Run.open(path).manifest
            if old["run_key"] != manifest["run_key"]:
                raise StoreError(f"{path}: holds run key {old['run_key'][:12]}, not {manifest['run_key'][:12]}")
            writer = cls(path, old)
            writer._drop_unlisted_shards()
            return writer
        if path.exists():
            shutil.rmtree(path / "shards", ignore_errors=True)
            shutil.rmtree(path / "features", ignore_errors=True)
            shutil.rmtree(path / "probes", ignore_errors=True)  # results of the features being replaced
            for name in (MANIFEST, "samples.safetensors"):
                (path / name).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        manifest = dict(manifest, status="incomplete", rows_done=0, shards=[], features=[])
        atomic_write_json(mpath, manifest)
        return cls(path, manifest)

    def _drop_unlisted_shards(self) -> None:
        """Remove shard files a killed writer left behind but never recorded."""
        listed = {s["file"] for s in self.manifest.get("shards", [])}
        for f in (self.path / "shards").glob("*"):
            if f"shards/{f.name}" not in listed:
                f.unlink()

    @property
    def rows_done(self) -> int:
        return int(self.manifest.get("rows_done", 0))

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def write_shard(self, features: Mapping[tuple[str, str], np.ndarray]) -> None:
        """Append rows for every (layer id, readout); all arrays must have the same row count."""
        counts = {v.shape[0] for v in features.values()}
        if len(counts) != 1:
            raise StoreError(f"{self.path}: shard arrays have different row counts {sorted(counts)}")
        n = counts.pop()
        start = self.rows_done
        name = f"shards/shard-{len(self.manifest['shards']):06d}.safetensors"
        sha = _save_tensors(self.path / name, {f"{lid}/{ro}": v.astype(np.float32, copy=False) for (lid, ro), v in features.items()})
        self.manifest["shards"].append({"file": name, "start": start, "stop": start + n, "sha256": sha})
        self.manifest["rows_done"] = start + n
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def finalize(self, labels: np.ndarray, splits: list[str]) -> Run:
        """Concatenate shards into per-layer files, write samples, mark the run complete."""
        from safetensors import safe_open

        n = len(self.manifest["dataset"]["sample_ids"])
        if self.rows_done != n:
            raise StoreError(f"{self.path}: {self.rows_done} rows written, {n} expected")
        shards = self.manifest["shards"]
        keys: list[str] = []
        if shards:
            with safe_open(str(self.path / shards[0]["file"]), framework="numpy") as f:
                keys = list(f.keys())
        order = {f"{l['id']}/{r}": (i, j) for i, l in enumerate(self.manifest["layers"]) for j, r in enumerate(self.manifest["readouts"])}
        keys.sort(key=lambda k: order.get(k, (len(order), 0)))
        files = []
        for key in keys:
            parts = []
            for s in shards:
                with safe_open(str(self.path / s["file"]), framework="numpy") as f:
                    parts.append(f.get_tensor(key))
            layer_id, readout = key.split("/", 1)
            rel = f"features/{feature_file_name(layer_id, readout)}"
            sha = _save_tensors(self.path / rel, {"features": np.concatenate(parts, axis=0)})
            files.append({"key": key, "file": rel, "shape": [n, int(parts[0].shape[1])], "sha256": sha})
        codes = np.array([SPLIT_CODES[s] for s in splits], dtype=np.uint8)
        sha = _save_tensors(self.path / "samples.safetensors", {"labels": np.asarray(labels, dtype=np.int64), "split": codes})
        self.manifest["samples_file"] = {"file": "samples.safetensors", "sha256": sha}
        self.manifest["features"] = files
        self.manifest["status"] = "complete"
        self.manifest["shards"] = []
        atomic_write_json(self.path / MANIFEST, self.manifest)
        shutil.rmtree(self.path / "shards", ignore_errors=True)
        return Run.open(self.path)


def list_runs(root: str | Path) -> list[Run]:
    """Every run directory directly below ``root`` (unreadable ones are skipped)."""
    root = Path(root)
    runs = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / MANIFEST).is_file():
                try:
                    runs.append(Run.open(d))
                except StoreError:
                    continue
    return runs
