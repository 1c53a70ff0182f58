"""The feature store: one run directory per (model, weights, dataset, split, layers, readouts,
preprocessing, dtype, code version), written shard by shard, resumable, memory-mapped on read.

Layout of a run directory::

    RUN/
      manifest.json                 # see below; rewritten atomically after every shard
      .lock                         # file lock: one writer per run
      shards/shard-000000.safetensors   # while extracting: rows [start, stop) of every layer
      features/<layer>__<readout>.safetensors   # when complete: one (N, D) float32 tensor "features"
      samples.safetensors           # "labels" (N,) int64 and "split" (N,) uint8 (0 train, 1 val, 2 test)

``manifest.json`` holds ``format`` (:data:`FORMAT`), ``schema`` (:data:`SCHEMA`), ``run_key``
(sha256 of :func:`run_key_payload`), ``status`` (``incomplete`` | ``complete``), the model card,
weights, adapter and version, the dataset spec, classes, fingerprint and sample ids (row order of
every feature file), the selected layers (LayerSpec dicts) and readouts, preprocessing, dtype,
device, batch size, seed, prompt, package versions, git hash, the synthetic flags, every shard /
feature file with its sha256 and size, and ``manifest_sha256`` (the checksum of everything else
in the manifest, :func:`manifest_checksum`). Writes go to a temporary file in the same folder,
are fsync'ed and renamed into place.

What is checked when a run is read (docs/feature-store.md, "Verification"):

* on every :meth:`Run.open`: the manifest against its schema (:func:`validate_manifest`: field
  types, sample ids against their hash, feature shapes against the sample count, file names) and
  against ``manifest_sha256``; a manifest written before schema 2 has no checksum and is read
  with :attr:`Run.unverified` saying so;
* on every open of a feature / samples file: its size (recorded and as its header describes),
  and its header's shape against the manifest; on the first use in a process: its sha256;
* on resume: every recorded shard (size and sha256); a bad shard and the shards after it are
  dropped and recomputed, with a :class:`StoreWarning`.

Reading::

    run = Run.open("runs/lingshu-7b__lesions__3f2a...")
    X = run.features("llm.03", "image-mean")    # np.memmap (N, D) float32, only that file is read
    y, split = run.labels, run.splits             # (N,), (N,) of "train" | "val" | "test"
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..registry import MedprobeError

FORMAT = "medprobe.run/1"
#: manifest schema: 1 = no ``schema`` field and no ``manifest_sha256`` (read, marked unverified);
#: 2 = ``manifest_sha256`` and the ``bytes`` of every shard / feature / samples file
SCHEMA = 2
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES = np.array(["train", "val", "test"])
MANIFEST = "manifest.json"
#: what a damaged complete run tells its user to do
RECOMPUTE = "rerun the same `medprobe extract` command to recompute the run"


class StoreError(MedprobeError):
    """A run directory is missing, corrupt, or from another format; names the path."""


class ManifestError(StoreError):
    """A run's manifest is not valid JSON, breaks the schema, or no longer matches its checksum."""


class StoreWriteError(StoreError, OSError):
    """Writing a file failed (no space left, read-only file system, permission denied); names the
    file and the way out. Also an ``OSError`` (``errno`` is kept) for callers that catch those."""

    def __init__(self, message: str, code: int | None = None):
        StoreError.__init__(self, message)
        self.errno = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class StoreWarning(UserWarning):
    """Something was repaired while opening a run (a bad shard dropped for recomputation)."""


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


_WRITE_REASONS = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space"),
    errno.EROFS: ("read-only file system", "use a writable folder"),
    errno.EACCES: ("permission denied", "use a writable folder"),
    errno.EPERM: ("operation not permitted", "use a writable folder"),
}


def write_error(exc: OSError, path: Path, what: str = "writing") -> StoreWriteError:
    """One line for an ``OSError`` while writing ``path``: what failed, where, and the way out."""
    reason, way = _WRITE_REASONS.get(exc.errno or 0, (exc.strerror or type(exc).__name__, "check the folder"))
    return StoreWriteError(f"{path}: {what} failed: {reason} (errno {exc.errno}); {way}", exc.errno)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename into place. An OSError
    becomes :class:`StoreWriteError` naming ``path`` (the temporary file is removed)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise write_error(exc, path, f"writing {len(data)} bytes") from None
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def ensure_writable(directory: str | Path, what: str, way_out: str) -> Path:
    """Create ``directory`` if needed and prove it writable (a temporary file is created and
    removed) before any work is done; else :class:`StoreWriteError` naming it, ``what`` was to be
    written there and ``way_out``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".medprobe-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = _WRITE_REASONS.get(exc.errno or 0, (exc.strerror or type(exc).__name__, ""))[0]
        raise StoreWriteError(f"{directory}: cannot write {what} there ({reason}); {way_out}", exc.errno) from None
    return directory


def remove_stray_temporaries(run_dir: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files :func:`atomic_write_bytes` leaves when a process is
    killed mid-write, in the run folder, ``features/`` and ``shards/``; returns them. Call only
    while holding the run's lock."""
    removed = []
    for folder in (run_dir, run_dir / "features", run_dir / "shards"):
        if folder.is_dir():
            for f in folder.glob(".*.tmp"):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def _save_tensors(path: Path, tensors: Mapping[str, np.ndarray]) -> tuple[str, int]:
    """Write numpy arrays as safetensors atomically; return the file's (sha256, size in bytes)."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U8": np.uint8, "F16": np.float16, "I32": np.int32}


def read_header(path: Path, hint: str = "") -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size (a truncated file
    is named, not memory-mapped past its end)."""
    tail = f"; {hint}" if hint else ""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise StoreError(f"{path}: truncated ({size} bytes, not a safetensors file){tail}")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > size - 8:
                raise StoreError(f"{path}: truncated ({size} bytes; its header alone needs {header_len + 8}){tail}")
            header = json.loads(f.read(header_len))
    except FileNotFoundError:
        raise StoreError(f"{path}: missing{tail}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not a readable safetensors file ({exc}){tail}") from None
    if not isinstance(header, dict):
        raise StoreError(f"{path}: not a readable safetensors file (header is not a JSON object){tail}")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
        if not ok or len(info["data_offsets"]) != 2 or info.get("dtype") not in _DTYPES:
            raise StoreError(f"{path}: tensor '{name}' has an unreadable header entry {info!r}{tail}")
        begin, stop = info["data_offsets"]
        want = int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(_DTYPES[info["dtype"]]).itemsize
        if stop - begin != want:
            raise StoreError(f"{path}: tensor '{name}' spans {stop - begin} bytes, its shape {info['shape']} needs {want}{tail}")
        end = max(end, stop)
    if size != 8 + header_len + end:
        state = "truncated" if size < 8 + header_len + end else "longer than its header describes"
        raise StoreError(f"{path}: {state} ({size} bytes, its header describes {8 + header_len + end}){tail}")
    header["__header_len__"] = header_len
    return header


def memmap_tensor(path: Path, name: str, hint: str = "") -> np.memmap:
    """Memory-map one tensor of a safetensors file (read-only, nothing else is read); the file's
    size is checked against its header first (:func:`read_header`)."""
    header = read_header(path, hint)
    if name not in header:
        raise StoreError(f"{path}: no tensor '{name}' (has {sorted(k for k in header if not k.startswith('__'))})")
    info = header[name]
    dtype = _DTYPES[info["dtype"]]
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if end == begin:
        return np.zeros(shape, dtype=dtype)  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header["__header_len__"] + begin, shape=shape)


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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: corrupt record, not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise error(f"{path}: format {got!r}, expected {fmt!r}")
    missing = [k for k in required if k not in record]
    if missing:
        raise error(f"{path}: missing field(s) {missing}")
    return record


# -- the manifest: checksum and schema ---------------------------------------------------------


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the manifest without its ``manifest_sha256`` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "manifest_sha256"}).encode()).hexdigest()


def seal_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as it will be stored: JSON values only, ``schema`` :data:`SCHEMA`, and its
    ``manifest_sha256``."""
    data = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "manifest_sha256"}, default=str))
    data["schema"] = SCHEMA
    data["manifest_sha256"] = manifest_checksum(data)
    return data


def sample_ids_sha256(ids: list[str]) -> str:
    """The ``dataset.sample_ids_sha256`` of a run: sha256 of the ids joined by newlines."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHARD_FILE = re.compile(r"shards/shard-[0-9]{6}\.safetensors")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def validate_manifest(m: Mapping[str, Any], run_dir: Path) -> None:
    """Check a run manifest against its schema and against itself: field types, the sample ids
    against ``sample_ids_sha256``, shard rows contiguous up to ``rows_done``, every feature file
    named for its key and shaped (number of samples, width). Raises :class:`ManifestError` naming
    the run's manifest and the field."""
    where = run_dir / MANIFEST

    def bad(name: str, problem: str) -> None:
        raise ManifestError(f"{where}: field '{name}' {problem}; the manifest is damaged: {RECOMPUTE} "
                            f"(or remove it: medprobe cache rm {run_dir})")

    def need(name: str, ok: bool, problem: str) -> None:
        if not ok:
            bad(name, problem)

    def get(obj: Mapping[str, Any], key: str, prefix: str = "") -> Any:
        if key not in obj:
            bad(prefix + key, "is missing")
        return obj[key]

    schema = m.get("schema", 1)
    need("schema", _is_int(schema) and schema >= 1, f"must be an integer, got {schema!r}")
    if schema > SCHEMA:
        raise ManifestError(f"{where}: schema {schema} was written by a newer medprobe (this one reads up to {SCHEMA}); "
                            "upgrade medprobe to read it")
    need("run_key", isinstance(get(m, "run_key"), str) and bool(_HEX64.fullmatch(m["run_key"])), "must be 64 hex digits")
    status = get(m, "status")
    need("status", status in ("incomplete", "complete"), f"must be 'incomplete' or 'complete', got {status!r}")
    rows_done = get(m, "rows_done")
    need("rows_done", _is_int(rows_done) and rows_done >= 0, f"must be a non-negative integer, got {rows_done!r}")
    model = get(m, "model")
    need("model", isinstance(model, dict), f"must be an object, got {type(model).__name__}")
    card = get(model, "card", "model.")
    need("model.card", isinstance(card, dict) and isinstance(card.get("id"), str), "must be a model card with a string 'id'")
    need("model.weights", isinstance(get(model, "weights", "model."), str), "must be a string")
    ds = get(m, "dataset")
    need("dataset", isinstance(ds, dict), f"must be an object, got {type(ds).__name__}")
    classes = get(ds, "classes", "dataset.")
    need("dataset.classes", _is_str_list(classes) and len(classes) >= 1 and len(set(classes)) == len(classes),
         "must be a non-empty list of distinct class names")
    ids = get(ds, "sample_ids", "dataset.")
    need("dataset.sample_ids", _is_str_list(ids) and len(ids) >= 1 and len(set(ids)) == len(ids),
         "must be a non-empty list of distinct sample ids")
    ids_sha = get(ds, "sample_ids_sha256", "dataset.")
    need("dataset.sample_ids", ids_sha == sample_ids_sha256(ids),
         f"holds {len(ids)} ids that do not match dataset.sample_ids_sha256 (ids were cut, added or reordered)")
    n = len(ids)
    layers = get(m, "layers")
    need("layers", isinstance(layers, list) and all(isinstance(x, dict) and isinstance(x.get("id"), str) for x in layers),
         "must be a list of layer records with a string 'id'")
    layer_ids = [x["id"] for x in layers]
    need("layers", len(set(layer_ids)) == len(layer_ids), "lists a layer id twice")
    readouts = get(m, "readouts")
    need("readouts", _is_str_list(readouts), "must be a list of readout names")
    need("dtype", isinstance(get(m, "dtype"), str), "must be a string")
    need("synthetic", isinstance(get(m, "synthetic"), bool), "must be true or false")
    need("synthetic_reasons", _is_str_list(m.get("synthetic_reasons", [])), "must be a list of strings")
    need("rows_done", rows_done <= n, f"is {rows_done}, more than the {n} sample ids")

    shards = get(m, "shards")
    need("shards", isinstance(shards, list), f"must be a list, got {type(shards).__name__}")
    stop = 0
    for i, s in enumerate(shards):
        name = f"shards[{i}]"
        need(name, isinstance(s, dict) and isinstance(s.get("file"), str) and bool(_SHARD_FILE.fullmatch(s["file"]))
             and _is_int(s.get("start")) and _is_int(s.get("stop")) and isinstance(s.get("sha256"), str)
             and bool(_HEX64.fullmatch(s["sha256"])), "must be {file: shards/shard-NNNNNN.safetensors, start, stop, sha256}")
        need(name, s["start"] == stop and s["stop"] > s["start"], f"covers rows {s['start']}-{s['stop']}, expected to start at {stop}")
        stop = s["stop"]
    need("shards", stop == (rows_done if status == "incomplete" else stop),
         f"cover rows 0-{stop} but rows_done is {rows_done}")

    features = get(m, "features")
    need("features", isinstance(features, list), f"must be a list of feature-file records, got {type(features).__name__}")
    seen = set()
    for i, f in enumerate(features):
        name = f"features[{i}]"
        ok = isinstance(f, dict) and isinstance(f.get("key"), str) and f["key"].count("/") >= 1
        need(name, ok, "must be {key: 'layer/readout', file, shape, sha256}")
        layer_id, readout = f["key"].split("/", 1)
        need(name, layer_id in layer_ids and readout in readouts, f"key '{f['key']}' names a layer or readout the run did not select")
        need(name, f["key"] not in seen, f"key '{f['key']}' is listed twice")
        seen.add(f["key"])
        need(name, f.get("file") == f"features/{feature_file_name(layer_id, readout)}",
             f"file {f.get('file')!r} is not features/{feature_file_name(layer_id, readout)}")
        shape = f.get("shape")
        need(name, isinstance(shape, list) and len(shape) == 2 and all(_is_int(x) for x in shape) and shape[0] == n and shape[1] > 0,
             f"shape {shape!r} is not [{n} samples, width]")
        need(name, isinstance(f.get("sha256"), str) and bool(_HEX64.fullmatch(f["sha256"])), "sha256 must be 64 hex digits")
    if status == "complete":
        need("features", len(features) >= 1, "is empty (a complete run lists at least one feature file)")
        need("rows_done", rows_done == n, f"is {rows_done} but the run is complete with {n} samples")
        sf = get(m, "samples_file")
        need("samples_file", isinstance(sf, dict) and sf.get("file") == "samples.safetensors" and isinstance(sf.get("sha256"), str)
             and bool(_HEX64.fullmatch(sf["sha256"])), "must be {file: samples.safetensors, sha256}")
    if schema >= 2:
        need("manifest_sha256", isinstance(m.get("manifest_sha256"), str), "is missing (schema 2 manifests carry their checksum)")


@dataclass
class Run:
    """A run directory opened for reading (manifest validated and checksummed on open; each file
    size-checked on every open and checksummed on its first use).

    ``unverified``: why parts of this run cannot be verified (a schema-1 manifest has no
    checksum); empty for a fully verifiable run. Results computed from the run record it
    (:meth:`integrity`)."""

    path: Path
    manifest: dict[str, Any]
    unverified: list[str] = field(default_factory=list)
    _checked: set[str] = field(default_factory=set, repr=False)
    _samples: dict[str, np.ndarray] | None = field(default=None, repr=False)
    #: what the call that returned this run did (not stored): ``{"status": "new" | "reused" |
    #: "resumed", "from_row": first row computed, "rows": total}``; ``None`` for an opened run
    outcome: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        path = Path(path)
        try:
            manifest = read_record(path, MANIFEST, FORMAT, "run")
        except StoreError as exc:
            if not (path / MANIFEST).is_file():
                raise
            raise ManifestError(f"{exc}; {RECOMPUTE} with --no-resume (or remove it: medprobe cache rm {path})") from None
        validate_manifest(manifest, path)
        unverified = []
        if "manifest_sha256" in manifest:
            if manifest["manifest_sha256"] != manifest_checksum(manifest):
                raise ManifestError(
                    f"{path / MANIFEST}: checksum mismatch: the manifest was changed after medprobe wrote it "
                    f"(manifest_sha256 no longer matches its content); {RECOMPUTE} with --no-resume "
                    f"(or remove it: medprobe cache rm {path})"
                )
        else:
            unverified.append("manifest written before manifest checksums (schema 1): classes and sample ids unverified")
        return cls(path, manifest, unverified)

    def __repr__(self) -> str:
        """Short: card, dataset, key, rows, layers, status (never the sample ids of the manifest)."""
        m = self.manifest
        ds = m.get("dataset") or {}
        status = "complete" if self.complete else f"incomplete {m.get('rows_done', 0)}/{len(ds.get('sample_ids') or [])}"
        return (
            f"Run({str(self.path)!r}, card={(m.get('model') or {}).get('card', {}).get('id')!r}, "
            f"dataset={ds.get('spec')!r}, key={str(m.get('run_key', ''))[:12]!r}, n={len(ds.get('sample_ids') or [])}, "
            f"layers={len(m.get('layers') or [])}, {status})"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython / Jupyter use the same short form
        p.text(repr(self))

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

    def integrity(self) -> dict[str, Any]:
        """What a result computed from this run records about its input: the run key, and
        ``verified`` (every file checksummed against a checksummed manifest) or ``unverified``
        with the reasons."""
        return {"run_key": self.key, "status": "unverified" if self.unverified else "verified",
                "reasons": list(self.unverified)}

    def _require_complete(self) -> None:
        if not self.complete:
            raise StoreError(f"{self.path}: run is incomplete ({self.manifest.get('rows_done', 0)} of "
                             f"{len(self.sample_ids)} rows); rerun the same extract command to resume")

    def _check_file(self, entry: Mapping[str, Any]) -> Path:
        """Size on every call, sha256 on the first call for this file; errors name the file."""
        path = self.path / entry["file"]
        if not path.is_file():
            raise StoreError(f"{path}: missing (listed in {self.path / MANIFEST}); {RECOMPUTE}")
        size = path.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            raise StoreError(f"{path}: {size} bytes, {entry['bytes']} recorded (truncated or replaced since it was written); {RECOMPUTE}")
        read_header(path, RECOMPUTE)  # its size against its own header (also without a recorded size)
        if entry["file"] not in self._checked:
            if sha256_file(path) != entry["sha256"]:
                raise StoreError(f"{path}: checksum mismatch (content changed since it was recorded); {RECOMPUTE}")
            self._checked.add(entry["file"])
        return path

    def _load_samples(self) -> dict[str, np.ndarray]:
        if self._samples is None:
            self._require_complete()
            path = self._check_file(self.manifest["samples_file"])
            n, k = len(self.sample_ids), len(self.classes)
            labels = np.asarray(memmap_tensor(path, "labels", RECOMPUTE))
            split = np.asarray(memmap_tensor(path, "split", RECOMPUTE))
            if labels.shape != (n,) or split.shape != (n,):
                raise StoreError(f"{path}: labels {labels.shape} / split {split.shape}, expected ({n},) for the {n} sample ids; {RECOMPUTE}")
            if labels.dtype != np.int64 or (n and (labels.min() < 0 or labels.max() >= k)):
                raise StoreError(f"{path}: labels outside 0..{k - 1} (the run has {k} classes); {RECOMPUTE}")
            if n and split.max() > 2:
                raise StoreError(f"{path}: split codes outside 0..2; {RECOMPUTE}")
            self._samples = {"labels": labels, "split": split}
        return self._samples

    @property
    def labels(self) -> np.ndarray:
        return self._load_samples()["labels"]

    @property
    def splits(self) -> np.ndarray:
        return SPLIT_NAMES[self._load_samples()["split"]]

    def _feature_entry(self, layer_id: str, readout: str) -> dict[str, Any]:
        for entry in self.manifest.get("features", []):
            if entry["key"] == f"{layer_id}/{readout}":
                return entry
        raise StoreError(f"{self.path}: no features for layer '{layer_id}' readout '{readout}'")

    def features(self, layer_id: str, readout: str = "image-mean") -> np.memmap:
        """(N, D) float32, memory-mapped; rows follow :attr:`sample_ids`. The file's size and
        shape are checked on every call, its sha256 on the first."""
        self._require_complete()
        entry = self._feature_entry(layer_id, readout)
        path = self._check_file(entry)
        x = memmap_tensor(path, "features", RECOMPUTE)
        if list(x.shape) != list(entry["shape"]) or x.dtype != np.float32:
            raise StoreError(f"{path}: holds {x.dtype} {list(x.shape)}, the manifest records float32 {entry['shape']}; {RECOMPUTE}")
        return x

    def iter_features(self) -> Iterator[tuple[str, str, np.memmap]]:
        for layer_id, readout in self.feature_keys:
            yield layer_id, readout, self.features(layer_id, readout)

    def verify(self) -> list[str]:
        """Check every file the manifest lists (present, size, sha256, header shape); return the
        problems found (empty = intact). Files that pass are not checksummed again on use."""
        problems = []
        entries = list(self.manifest.get("shards", []))
        if self.complete:
            entries = list(self.manifest.get("features", [])) + [self.manifest["samples_file"]] + entries
        for entry in entries:
            try:
                path = self._check_file(entry)
                header = read_header(path)
                if "shape" in entry and header.get("features", {}).get("shape") != entry["shape"]:
                    problems.append(f"{path}: shape {header.get('features', {}).get('shape')}, manifest records {entry['shape']}")
            except StoreError as exc:
                problems.append(str(exc).split("; ")[0])
        if self.complete and not problems:
            try:
                self._load_samples()
            except StoreError as exc:
                problems.append(str(exc).split("; ")[0])
        return problems


class RunWriter:
    """Writes one run directory shard by shard (used by :func:`medprobe.features.extract.extract`).

    ``rows_done`` tells where a resumed extraction starts. Call :meth:`write_shard` with the rows
    ``[rows_done, rows_done + n)`` and :meth:`finalize` once all rows are written. Hold the run's
    file lock (``RUN/.lock``) while writing.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @classmethod
    def create_or_resume(cls, path: Path, manifest: dict[str, Any], resume: bool = True) -> "RunWriter":
        """Resume the run at ``path`` (same run key; every recorded shard verified, a bad one
        dropped for recomputation with a :class:`StoreWarning`) or start it over."""
        mpath = path / MANIFEST
        if mpath.is_file() and resume:
            old = Run.open(path).manifest
            if old["run_key"] != manifest["run_key"]:
                raise StoreError(f"{path}: holds run key {old['run_key'][:12]}, not {manifest['run_key'][:12]}")
            writer = cls(path, old)
            remove_stray_temporaries(path)
            if not writer.complete:
                writer._drop_unlisted_shards()
                writer._verify_shards()
            return writer
        try:
            if path.exists():
                shutil.rmtree(path / "shards", ignore_errors=True)
                shutil.rmtree(path / "features", ignore_errors=True)
                shutil.rmtree(path / "probes", ignore_errors=True)  # results of the features being replaced
                for name in (MANIFEST, "samples.safetensors"):
                    (path / name).unlink(missing_ok=True)
                remove_stray_temporaries(path)
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(exc, path, "preparing the run directory") from None
        writer = cls(path, dict(manifest, status="incomplete", rows_done=0, shards=[], features=[]))
        writer._write_manifest()
        return writer

    def _write_manifest(self, candidate: dict[str, Any] | None = None) -> None:
        """Write ``candidate`` (default: the current manifest) sealed; it becomes the current
        manifest only once it is on disk, so a failed write leaves the recorded state as it was."""
        sealed = seal_manifest(self.manifest if candidate is None else candidate)
        try:
            atomic_write_json(self.path / MANIFEST, sealed)
        except StoreWriteError as exc:
            raise self._resumable(exc) from None
        self.manifest = sealed

    def _resumable(self, exc: StoreWriteError) -> StoreWriteError:
        n = len(self.manifest["dataset"]["sample_ids"])
        return StoreWriteError(f"{exc} and rerun the same command to resume ({self.rows_done} of {n} rows are kept in {self.path})",
                               exc.errno)

    def _drop_unlisted_shards(self) -> None:
        """Remove shard files a killed writer left behind but never recorded."""
        listed = {s["file"] for s in self.manifest.get("shards", [])}
        for f in (self.path / "shards").glob("*"):
            if f"shards/{f.name}" not in listed:
                f.unlink()

    def _verify_shards(self) -> None:
        """Check every recorded shard (present, size, header, sha256). The first bad one and every
        shard after it are dropped (``rows_done`` goes back to its first row), with a warning."""
        shards = self.manifest["shards"]
        for i, s in enumerate(shards):
            path = self.path / s["file"]
            try:
                if not path.is_file():
                    raise StoreError(f"{path}: missing")
                if "bytes" in s and path.stat().st_size != s["bytes"]:
                    raise StoreError(f"{path}: {path.stat().st_size} bytes, {s['bytes']} recorded (truncated)")
                read_header(path)
                if sha256_file(path) != s["sha256"]:
                    raise StoreError(f"{path}: checksum mismatch (content changed since it was recorded)")
            except StoreError as exc:
                dropped = shards[i:]
                for d in dropped:
                    (self.path / d["file"]).unlink(missing_ok=True)
                self._write_manifest(dict(self.manifest, shards=shards[:i], rows_done=s["start"]))
                warnings.warn(StoreWarning(
                    f"{exc}; recomputing rows {s['start']}-{dropped[-1]['stop']} "
                    f"({len(dropped)} shard(s) dropped, rows 0-{s['start']} kept)"), stacklevel=3)
                return

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
        try:
            sha, size = _save_tensors(self.path / name, {f"{lid}/{ro}": v.astype(np.float32, copy=False) for (lid, ro), v in features.items()})
        except StoreWriteError as exc:
            raise self._resumable(exc) from None
        entry = {"file": name, "start": start, "stop": start + n, "sha256": sha, "bytes": size}
        self._write_manifest(dict(self.manifest, shards=[*self.manifest["shards"], entry], rows_done=start + n))

    def finalize(self, labels: np.ndarray, splits: list[str]) -> Run:
        """Concatenate shards into per-layer files, write samples, mark the run complete."""
        from safetensors import safe_open

        n = len(self.manifest["dataset"]["sample_ids"])
        if self.rows_done != n:
            raise StoreError(f"{self.path}: {self.rows_done} rows written, {n} expected")
        shards = self.manifest["shards"]
        for s in shards:  # sizes against their headers: a shard damaged since resume is named
            read_header(self.path / s["file"], "rerun the same command: the damaged shard is recomputed")
        keys: list[str] = []
        if shards:
            with safe_open(str(self.path / shards[0]["file"]), framework="numpy") as f:
                keys = list(f.keys())
        if not keys:
            raise StoreError(f"{self.path}: no (layer, readout) features were captured")
        order = {f"{l['id']}/{r}": (i, j) for i, l in enumerate(self.manifest["layers"]) for j, r in enumerate(self.manifest["readouts"])}
        keys.sort(key=lambda k: order.get(k, (len(order), 0)))
        files = []
        try:
            for key in keys:
                parts = []
                for s in shards:
                    with safe_open(str(self.path / s["file"]), framework="numpy") as f:
                        parts.append(f.get_tensor(key))
                layer_id, readout = key.split("/", 1)
                rel = f"features/{feature_file_name(layer_id, readout)}"
                sha, size = _save_tensors(self.path / rel, {"features": np.concatenate(parts, axis=0)})
                files.append({"key": key, "file": rel, "shape": [n, int(parts[0].shape[1])], "sha256": sha, "bytes": size})
            codes = np.array([SPLIT_CODES[s] for s in splits], dtype=np.uint8)
            sha, size = _save_tensors(self.path / "samples.safetensors",
                                      {"labels": np.asarray(labels, dtype=np.int64), "split": codes})
        except StoreWriteError as exc:
            raise self._resumable(exc) from None
        self._write_manifest(dict(self.manifest, samples_file={"file": "samples.safetensors", "sha256": sha, "bytes": size},
                                  features=files, status="complete", shards=[]))
        shutil.rmtree(self.path / "shards", ignore_errors=True)
        remove_stray_temporaries(self.path)
        run = Run.open(self.path)
        run._checked.update(f["file"] for f in files)  # written from memory just now
        run._checked.add("samples.safetensors")
        return run


def list_runs(root: str | Path, problems: list[tuple[Path, str]] | None = None) -> list[Run]:
    """Every run directory directly below ``root``. A run that cannot be opened (damaged manifest,
    unreadable files) is not returned; with ``problems`` it is appended there as ``(dir, reason)``
    so the caller can say so (``medprobe cache ls`` does)."""
    root = Path(root)
    runs = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if (d / MANIFEST).is_file():
                try:
                    runs.append(Run.open(d))
                except StoreError as exc:
                    if problems is not None:
                        problems.append((d, str(exc)))
    return runs
