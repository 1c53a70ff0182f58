"""``imagefolder:PATH``: one folder per class, optionally under ``train/ val/ test/``.

Layouts::

    PATH/<class>/**/<image>                 # no official split: seeded stratified split
    PATH/{train,val,test}/<class>/**/<image>   # official split (any of the three; "valid",
                                               # "validation", "training", "testing" accepted)

Classes are the class-folder names, sorted (or the ``classes`` option, in its order; images in
other folders are then bad samples with an "unknown label" reason). Images may sit in
sub-folders of a class folder. ``group_regex`` extracts a patient id from the path below the
class folder (first capture group, else the whole match), e.g. ``group_regex=^(\\w+)/`` for
``<class>/<patient>/<image>`` or ``group_regex=(person\\d+)_``. ``exclude`` lists file-name
patterns to leave out (recorded as ignored). Files whose names look like segmentation masks
(``*_mask*``) are read as images but trigger a warning.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from .base import FileDataset, Sample
from .errors import BadSample, DatasetLayoutError, DatasetSpecError
from .layout import is_mask, listdir, merge_ignored, rel, resolve_root, split_name, subdirs, walk_files


def find_class_layout(root: Path, scheme: str) -> tuple[list[tuple[str | None, Path]], dict[str, list[str]]]:
    """``[(split or None, folder holding class folders)]`` and files ignored at the top levels."""
    top = subdirs(root)
    ignored: dict[str, list[str]] = {}
    loose = [p for p in listdir(root) if p.is_file() and not p.name.startswith(".")]
    if loose:
        ignored["outside a class folder"] = [rel(p, root) for p in loose]
    split_dirs = {p: split_name(p.name) for p in top}
    named = [p for p, sp in split_dirs.items() if sp]
    if named and len(named) != len(top):
        others = [p.name for p, sp in split_dirs.items() if not sp]
        raise DatasetLayoutError(
            f"{scheme}: '{root}' mixes split folders ({', '.join(p.name for p in named)}) with other folders "
            f"({', '.join(others)}); use either PATH/<class>/ or PATH/<split>/<class>/"
        )
    if not named:
        return [(None, root)], ignored
    seen: dict[str, Path] = {}
    out = []
    for p in named:
        sp = split_dirs[p]
        if sp in seen:
            raise DatasetLayoutError(f"{scheme}: '{root}' has two folders for split '{sp}': {seen[sp].name} and {p.name}")
        seen[sp] = p
        out.append((sp, p))
        loose = [f for f in listdir(p) if f.is_file() and not f.name.startswith(".")]
        if loose:
            ignored.setdefault("outside a class folder", []).extend(rel(f, root) for f in loose)
    return out, ignored


def imagefolder(
    location: str,
    classes: tuple[str, ...] | None = None,
    group_regex: str | None = None,
    exclude: tuple[str, ...] | None = None,
) -> FileDataset:
    """Read an image-folder dataset (see the module doc)."""
    root = resolve_root(location, "imagefolder")
    parts, ignored = find_class_layout(root, "imagefolder")
    pattern = None
    if group_regex:
        try:
            pattern = re.compile(group_regex)
        except re.error as exc:
            raise DatasetSpecError(f"imagefolder: group_regex {group_regex!r} is not a valid regular expression: {exc}") from None
    found: list[tuple[str | None, str, Path, Path]] = []  # split, class folder name, class dir, file
    for split, folder in parts:
        for cdir in subdirs(folder):
            files, ign = walk_files(cdir, root)
            ignored = merge_ignored(ignored, ign)
            found.extend((split, cdir.name, cdir, f) for f in files)
    folder_names = sorted({name for _sp, name, _d, _f in found} | {c.name for _s, fo in parts for c in subdirs(fo)})
    class_list = list(classes) if classes else folder_names
    if not class_list:
        raise DatasetLayoutError(f"imagefolder: '{root}' has no class folders")
    if len(set(class_list)) != len(class_list):
        raise DatasetSpecError(f"imagefolder: option classes lists a class twice: {', '.join(class_list)}")
    index = {c: i for i, c in enumerate(class_list)}
    samples: list[Sample] = []
    bad: list[BadSample] = []
    masks: list[str] = []
    no_group = 0
    for split, cname, cdir, f in found:
        sid = rel(f, root)
        if exclude and any(fnmatch.fnmatch(f.name, pat) for pat in exclude):
            ignored.setdefault("excluded by option", []).append(sid)
            continue
        if cname not in index:
            bad.append(BadSample(sid, str(f), f"unknown label '{cname}' (classes: {', '.join(class_list)})"))
            continue
        if is_mask(f.name):
            masks.append(sid)
        group = None
        if pattern is not None:
            m = pattern.search(f.relative_to(cdir).as_posix())
            if m:
                group = m.group(1) if m.groups() else m.group(0)
            else:
                no_group += 1
        samples.append(Sample(sid, index[cname], split, group, str(f)))
    warnings = []
    with_files = {(split, name) for split, name, _d, _f in found}
    for split, folder in parts:
        for cdir in subdirs(folder):
            if (split, cdir.name) not in with_files:
                warnings.append(f"class folder '{cdir}' holds no image files")
    if masks:
        warnings.append(
            f"{len(masks)} file(s) look like segmentation masks and are read as images (e.g. {masks[0]}); "
            "use the busi: loader or exclude=*_mask*"
        )
    if pattern is not None and no_group:
        warnings.append(f"group_regex {group_regex!r} matched no patient id in {no_group} file(s); they are split as their own groups")
    if parts[0][0] is not None and classes is None:
        for split, folder in parts:
            have = {c.name for c in subdirs(folder)}
            missing = [c for c in class_list if c not in have]
            if missing:
                warnings.append(f"split folder '{folder.name}' has no folder for class(es): {', '.join(missing)}")
    return FileDataset(
        "imagefolder",
        class_list,
        samples,
        root=root,
        ignored=ignored,
        bad=bad,
        warnings=warnings,
        notes=["official split from the train/val/test folders"] if parts[0][0] is not None else [],
    )
