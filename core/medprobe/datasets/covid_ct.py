"""``covid-ct:PATH``: the UCSD-AI4H COVID-CT set (CT slices, COVID vs non-COVID).

Layout (the GitHub repository after unzipping the image archives)::

    PATH/Images-processed/CT_COVID/2020.01.24.919183-p27-132.png     # or PATH/CT_COVID/
    PATH/Images-processed/CT_NonCOVID/0.jpg                          # or PATH/CT_NonCOVID/
    PATH/Data-split/COVID/{train,val,test}CT_COVID.txt               # optional split lists
    PATH/Data-split/NonCOVID/{train,val,test}CT_NonCOVID.txt

Classes are ``NonCOVID`` (0) and ``COVID`` (1). When the six published split lists are
present (found anywhere under ``PATH`` by name), they are the official split: each line names
one image file. A file listed in two different lists, a listed file that is missing, and an
image that no list names are bad samples (reported, or skipped with ``skip_bad``); a name
repeated inside one list is counted in the notes. Without the lists the split is seeded and
stratified. Patient ids live in ``COVID-CT-MetaInfo.xlsx``, which is not read: a seeded split
is therefore not grouped (a warning says so).
"""

from __future__ import annotations

from pathlib import Path

from .base import FileDataset, Sample
from .errors import BadSample, DatasetLayoutError
from .layout import is_hidden, listdir, merge_ignored, rel, resolve_root, walk_files

CLASSES = ("NonCOVID", "COVID")
FOLDERS = {"COVID": "CT_COVID", "NonCOVID": "CT_NonCOVID"}
SPLITS = ("train", "val", "test")


def _find_dirs(root: Path, name: str, want_dir: bool) -> list[Path]:
    """Entries called ``name`` (case-insensitive) at most three levels under ``root``."""
    found = []
    low = name.lower()
    frontier = [root]
    for _depth in range(4):
        nxt = []
        for folder in frontier:
            for p in listdir(folder):
                if is_hidden(p.name):
                    continue
                if p.name.lower() == low and p.is_dir() == want_dir:
                    found.append(p)
                if p.is_dir():
                    nxt.append(p)
        frontier = nxt
    return found


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(f"{path}: split list is not UTF-8 text ({exc.reason})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def covid_ct(location: str) -> FileDataset:
    """Read the COVID-CT layout (see the module doc)."""
    root = resolve_root(location, "covid-ct")
    class_dirs: dict[str, Path] = {}
    for cname, folder in FOLDERS.items():
        hits = _find_dirs(root, folder, want_dir=True)
        if not hits:
            raise DatasetLayoutError(
                f"covid-ct: no '{folder}' folder under '{root}' (unzip Images-processed/{folder}.zip first)"
            )
        if len(hits) > 1:
            raise DatasetLayoutError(f"covid-ct: several '{folder}' folders under '{root}': {', '.join(str(h) for h in hits)}")
        class_dirs[cname] = hits[0]

    lists: dict[tuple[str, str], Path] = {}
    for cname, folder in FOLDERS.items():
        for sp in SPLITS:
            hits = _find_dirs(root, f"{sp}{folder}.txt", want_dir=False)
            if len(hits) > 1:
                raise DatasetLayoutError(f"covid-ct: several split lists named {sp}{folder}.txt: {', '.join(map(str, hits))}")
            if hits:
                lists[(cname, sp)] = hits[0]
    expected = [(c, sp) for c in FOLDERS for sp in SPLITS]
    if lists and len(lists) != len(expected):
        missing = [f"{sp}{FOLDERS[c]}.txt" for c, sp in expected if (c, sp) not in lists]
        raise DatasetLayoutError(f"covid-ct: '{root}' has only some of the split lists; missing: {', '.join(missing)}")

    samples: list[Sample] = []
    bad: list[BadSample] = []
    ignored: dict[str, list[str]] = {}
    notes: list[str] = []
    warnings: list[str] = []
    for cname, cdir in class_dirs.items():
        files, ign = walk_files(cdir, root)
        ignored = merge_ignored(ignored, ign)
        by_name = {f.name: f for f in files}
        assigned: dict[str, tuple[str, Path]] = {}
        conflicts: set[str] = set()
        if lists:
            for sp in SPLITS:
                list_path = lists[(cname, sp)]
                names = _read_list(list_path)
                repeats = len(names) - len(set(names))
                if repeats:
                    notes.append(f"{list_path.name}: {repeats} name(s) listed more than once (counted once)")
                for name in dict.fromkeys(names):
                    if name in assigned and assigned[name][0] != sp:
                        conflicts.add(name)
                        continue
                    assigned[name] = (sp, list_path)
            for name, (sp, list_path) in sorted(assigned.items()):
                if name not in by_name:
                    sid = f"{rel(cdir, root)}/{name}"
                    bad.append(BadSample(sid, f"{list_path} ({name})", f"listed in {list_path.name} but no such file in {cdir}"))
        for name, f in sorted(by_name.items()):
            sid = rel(f, root)
            split = None
            if lists:
                if name in conflicts:
                    bad.append(BadSample(sid, str(f), "listed in more than one split list"))
                    continue
                if name not in assigned:
                    bad.append(BadSample(sid, str(f), f"not named in any {FOLDERS[cname]} split list"))
                    continue
                split = assigned[name][0]
            samples.append(Sample(sid, CLASSES.index(cname), split, None, str(f)))
    if lists:
        notes.append("official split from the published Data-split lists")
    else:
        warnings.append(
            "no Data-split lists found: seeded split without patient grouping "
            "(patient ids are in COVID-CT-MetaInfo.xlsx, which is not read)"
        )
    return FileDataset("covid-ct", CLASSES, samples, root=root, ignored=ignored, bad=bad, notes=notes, warnings=warnings)
