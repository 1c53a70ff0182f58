"""``chest-xray:PATH``: the Kermany paediatric chest X-ray set (NORMAL vs PNEUMONIA).

Layout (the Kaggle "chest_xray" folder; ``val/`` is optional)::

    PATH/{train,val,test}/NORMAL/IM-0115-0001.jpeg
    PATH/{train,val,test}/NORMAL/NORMAL2-IM-1427-0001.jpeg
    PATH/{train,val,test}/PNEUMONIA/person1000_bacteria_2931.jpeg

``PATH`` may also be a folder holding one ``chest_xray/`` with that layout; a nested
``chest_xray/`` copy next to ``train/`` (as in the Kaggle archive) is ignored.
The official split is used; without ``val/`` a validation part is carved out of ``train``,
grouped by patient. Patient ids come from file names: ``personN_...`` -> ``personN``;
``IM-XXXX-YYYY`` -> ``IM-XXXX`` (with any ``NORMAL2-`` prefix kept). Patients found in two
official splits are reported as leakage warnings.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import FileDataset, Sample
from .errors import BadSample, DatasetLayoutError
from .layout import merge_ignored, rel, resolve_root, split_name, subdirs, walk_files

CLASSES = ("NORMAL", "PNEUMONIA")
_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_IM = re.compile(r"^((?:[A-Za-z]+\d*-)?IM-\d+)-\d+", re.IGNORECASE)


def patient_id(filename: str) -> str | None:
    """The patient id in a Kermany file name, or ``None``."""
    m = _PERSON.match(filename) or _IM.match(filename)
    return m.group(1) if m else None


def _find_root(root: Path) -> Path:
    names = {p.name.lower(): p for p in subdirs(root)}
    if "train" in names or "test" in names:
        return root
    nested = names.get("chest_xray")
    if nested is not None:
        return _find_root(nested)
    raise DatasetLayoutError(
        f"chest-xray: '{root}' has no train/ or test/ folder (found: {', '.join(sorted(names)) or 'no folders'}); "
        "point to the folder holding train/, val/, test/"
    )


def chest_xray(location: str) -> FileDataset:
    """Read the Kermany chest X-ray layout (see the module doc)."""
    root = _find_root(resolve_root(location, "chest-xray"))
    samples: list[Sample] = []
    bad: list[BadSample] = []
    ignored: dict[str, list[str]] = {}
    splits_seen = []
    for folder in subdirs(root):
        split = split_name(folder.name)
        if split is None:
            ignored.setdefault("not a split folder", []).append(rel(folder, root) + "/")
            continue
        splits_seen.append(split)
        classes = {p.name.upper(): p for p in subdirs(folder)}
        missing = [c for c in CLASSES if c not in classes]
        if missing:
            raise DatasetLayoutError(f"chest-xray: '{folder}' has no {', '.join(missing)} folder")
        for cname, cdir in sorted(classes.items()):
            files, ign = walk_files(cdir, root)
            ignored = merge_ignored(ignored, ign)
            for f in files:
                sid = rel(f, root)
                if cname not in CLASSES:
                    bad.append(BadSample(sid, str(f), f"unknown label '{cdir.name}' (classes: {', '.join(CLASSES)})"))
                    continue
                samples.append(Sample(sid, CLASSES.index(cname), split, patient_id(f.name), str(f)))
    if "train" not in splits_seen or "test" not in splits_seen:
        raise DatasetLayoutError(f"chest-xray: '{root}' needs both train/ and test/ folders (found: {', '.join(splits_seen)})")
    unparsed = sum(1 for s in samples if s.group is None)
    warnings = [f"{unparsed} file name(s) carry no patient id (personN_ / IM-XXXX-)"] if unparsed else []
    if "val" not in splits_seen:
        warnings.append("no val/ folder: a validation split is carved out of train, grouped by patient")
    return FileDataset(
        "chest-xray",
        CLASSES,
        samples,
        root=root,
        ignored=ignored,
        bad=bad,
        warnings=warnings,
        notes=["official Kermany split; patient ids parsed from file names"],
    )
