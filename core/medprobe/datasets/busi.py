"""``busi:PATH``: Dataset_BUSI_with_GT (breast ultrasound, 780 images, 3 classes).

Layout::

    PATH/benign/benign (1).png
    PATH/benign/benign (1)_mask.png        # segmentation masks, also *_mask_1.png, *_mask_2.png
    PATH/malignant/...
    PATH/normal/...

``PATH`` may also be the folder that contains ``Dataset_BUSI_with_GT``. Files matching
``*_mask*`` are masks: they are never read as images and are counted under ``ignored``.
Class folders are matched case-insensitively; other folders hold "unknown label" bad samples.
BUSI has no official split and no patient ids, so the split is seeded and stratified but not
grouped (a warning says so); BUSI is known to contain duplicate images, which the duplicate
check reports.
"""

from __future__ import annotations

from .base import FileDataset, Sample
from .errors import BadSample, DatasetLayoutError
from .layout import is_mask, merge_ignored, rel, resolve_root, subdirs, walk_files

CLASSES = ("benign", "malignant", "normal")
FOLDER = "Dataset_BUSI_with_GT"


def busi(location: str) -> FileDataset:
    """Read Dataset_BUSI_with_GT (see the module doc)."""
    root = resolve_root(location, "busi")
    folders = {p.name.lower(): p for p in subdirs(root)}
    if not any(c in folders for c in CLASSES) and FOLDER.lower() in folders:
        root = folders[FOLDER.lower()]
        folders = {p.name.lower(): p for p in subdirs(root)}
    missing = [c for c in CLASSES if c not in folders]
    if missing:
        raise DatasetLayoutError(
            f"busi: '{root}' has no folder for class(es) {', '.join(missing)}; expected benign/, malignant/, normal/ "
            f"(found: {', '.join(sorted(folders)) or 'no folders'})"
        )
    samples: list[Sample] = []
    bad: list[BadSample] = []
    ignored: dict[str, list[str]] = {}
    for name, folder in sorted(folders.items()):
        files, ign = walk_files(folder, root)
        ignored = merge_ignored(ignored, ign)
        for f in files:
            sid = rel(f, root)
            if is_mask(f.name):
                ignored.setdefault("segmentation mask (*_mask*)", []).append(sid)
            elif name not in CLASSES:
                bad.append(BadSample(sid, str(f), f"unknown label '{folder.name}' (classes: {', '.join(CLASSES)})"))
            else:
                samples.append(Sample(sid, CLASSES.index(name), None, None, str(f)))
    return FileDataset(
        "busi",
        CLASSES,
        samples,
        root=root,
        ignored=ignored,
        bad=bad,
        warnings=["BUSI has no patient ids: images of one patient may fall into different splits"],
    )
