"""``csv:PATH``: a manifest with one row per image.

Columns (header row required; comma, semicolon or tab separated; names case-insensitive):

- path (required): ``path``, ``image``, ``image_path``, ``file``, ``filename`` or ``filepath``;
  relative to the CSV's folder, or absolute. Paths that resolve outside the CSV's folder
  (``../``, absolute paths elsewhere, links out) are refused as bad samples.
- label (required): ``label``, ``class``, ``target``, ``diagnosis`` or ``category``.
- split (optional): ``split``, ``subset`` or ``fold``: ``train``/``val``/``test`` (``valid``,
  ``validation``, ``dev``, ``training``, ``testing`` accepted). When present it is the official
  split and every row needs one.
- group (optional): ``patient_id``, ``patient``, ``group``, ``subject``, ``subject_id`` or ``case``.

Options ``path_col``, ``label_col``, ``split_col``, ``group_col`` name the columns explicitly;
``classes`` fixes the class list and order (labels outside it are bad samples). Without
``classes``, classes are the distinct labels sorted.

**Numeric labels.** Labels that look like numbers (``1``, ``01``, ``1.0``, ``1e1``) are read as
numbers: labels denoting the same number are one class, named by its plain form (``01`` and
``1.0`` -> ``1``; ``0.50`` -> ``0.5``), and classes are ordered numerically (``2`` before ``10``),
numbers before any text label. A warning always says so (and lists the merged spellings): pass
``classes=...`` to name and order the classes yourself; with ``classes``, a numeric label
matches the class denoting the same number.

The sample id is the path as written in the CSV, normalised to POSIX form. File names that loop
or point nowhere are bad samples with that reason.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path, PurePosixPath, PureWindowsPath

from .base import FileDataset, Sample
from .errors import BadSample, DatasetLayoutError, DatasetSpecError
from .imageio import is_image_name
from .layout import inside, link_problem, resolve_root, split_name

PATH_COLUMNS = ("path", "image", "image_path", "file", "filename", "filepath", "file_path")
LABEL_COLUMNS = ("label", "class", "target", "diagnosis", "category")
SPLIT_COLUMNS = ("split", "subset", "fold")
GROUP_COLUMNS = ("patient_id", "patient", "group", "subject", "subject_id", "case")


def _pick(header: dict[str, str], explicit: str | None, aliases: tuple[str, ...], what: str, csv_path: Path, required: bool) -> str | None:
    if explicit:
        key = explicit.strip().lower()
        if key not in header:
            raise DatasetLayoutError(
                f"{csv_path}: column '{explicit}' ({what}) not found; columns are: {', '.join(header.values())}"
            )
        return header[key]
    for alias in aliases:
        if alias in header:
            return header[alias]
    if required:
        raise DatasetLayoutError(
            f"{csv_path}: missing the {what} column; expected one of {', '.join(aliases)} "
            f"(or name it with {what}_col=...); columns are: {', '.join(header.values()) or '(none)'}"
        )
    return None


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def numeric_label(label: str) -> Decimal | None:
    """The number a label denotes (``"01"`` -> 1, ``"1.0"`` -> 1), or ``None`` for text."""
    return Decimal(label) if _NUMBER.match(label) else None


def _plain(number: Decimal) -> str:
    """The plain spelling of a number: ``1``, ``10``, ``0.5``, ``-2`` (never an exponent)."""
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def label_classes(labels: set[str], where: str) -> tuple[list[str], dict[str, str], str | None]:
    """``(classes in order, raw label -> class name, warning or None)`` for the labels seen.

    Numeric labels are merged by value and ordered numerically, before text labels (module doc).
    """
    numbers = {lab: numeric_label(lab) for lab in labels}
    numeric = {lab: n for lab, n in numbers.items() if n is not None}
    if not numeric:
        return sorted(labels), {lab: lab for lab in labels}, None
    mapping = {lab: (_plain(n) if n is not None else lab) for lab, n in numbers.items()}
    values = {}
    for lab, n in numeric.items():
        values[mapping[lab]] = n
    ordered = sorted(values, key=lambda c: values[c]) + sorted({lab for lab, n in numbers.items() if n is None})
    spellings: dict[str, list[str]] = {}
    for lab in sorted(numeric):
        spellings.setdefault(mapping[lab], []).append(lab)
    merged = [f"{', '.join(repr(x) for x in spell)} -> '{name}'" for name, spell in spellings.items() if spell != [name]]
    text = sorted(lab for lab, n in numbers.items() if n is None)
    warning = f"{where} look numeric: read as numbers, classes ordered numerically: {', '.join(ordered)}"
    if merged:
        warning += f"; spellings of the same number merged into one class: {'; '.join(merged)}"
    if text:
        warning += f"; text labels ({', '.join(text)}) come after the numbers"
    warning += " (pass classes=... to name and order the classes yourself)"
    return ordered, mapping, warning


def _normalise_id(raw: str) -> str:
    if "\\" in raw and "/" not in raw:
        return PureWindowsPath(raw).as_posix()
    return PurePosixPath(raw).as_posix()


def manifest(
    location: str,
    path_col: str | None = None,
    label_col: str | None = None,
    split_col: str | None = None,
    group_col: str | None = None,
    classes: tuple[str, ...] | None = None,
) -> FileDataset:
    """Read a CSV manifest (see the module doc)."""
    csv_path = resolve_root(location, "csv", want_dir=False)
    root = csv_path.parent
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetLayoutError(
            f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 "
            f"(e.g. iconv -f latin1 -t utf-8 {csv_path.name} > utf8.csv)"
        ) from None
    if not text.strip():
        raise DatasetLayoutError(f"{csv_path}: empty manifest (no header row)")
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DatasetLayoutError(f"{csv_path} line {reader.line_num}: malformed CSV ({exc})") from None
    names = [h.strip() for h in rows[0][1]]
    header = {h.lower(): h for h in names if h}
    col_path = _pick(header, path_col, PATH_COLUMNS, "path", csv_path, True)
    col_label = _pick(header, label_col, LABEL_COLUMNS, "label", csv_path, True)
    col_split = _pick(header, split_col, SPLIT_COLUMNS, "split", csv_path, False)
    col_group = _pick(header, group_col, GROUP_COLUMNS, "group", csv_path, False)
    pos = {h: i for i, h in enumerate(names)}

    records: list[tuple[int, dict[str, str]]] = []
    for lineno, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            raise DatasetLayoutError(f"{csv_path} line {lineno}: {len(row)} fields but the header has {len(names)}")
        cells = {h: (row[i].strip() if i < len(row) else "") for h, i in pos.items()}
        records.append((lineno, cells))
    if not records:
        raise DatasetLayoutError(f"{csv_path}: the manifest has a header but no rows")

    labels_seen = {c[col_label] for _l, c in records if c[col_label]}
    warnings: list[str] = []
    if classes:
        class_list = list(classes)
        by_number = {}
        for c in class_list:
            n = numeric_label(c)
            if n is not None:
                by_number.setdefault(n, []).append(c)
        label_map = {}
        for lab in labels_seen:
            n = numeric_label(lab)
            if lab not in class_list and n is not None and len(by_number.get(n, [])) == 1:
                label_map[lab] = by_number[n][0]
        if label_map:
            warnings.append(
                f"{csv_path.name}: labels in column '{col_label}' matched to the class denoting the same number: "
                + ", ".join(f"'{k}' -> '{v}'" for k, v in sorted(label_map.items()))
            )
    else:
        class_list, label_map, warning = label_classes(labels_seen, f"{csv_path.name}: labels in column '{col_label}'")
        if warning:
            warnings.append(warning)
    if not class_list:
        raise DatasetLayoutError(f"{csv_path}: no row has a label in column '{col_label}'")
    if len(set(class_list)) != len(class_list):
        raise DatasetSpecError(f"csv: option classes lists a class twice: {', '.join(class_list)}")
    index = {c: i for i, c in enumerate(class_list)}

    samples: list[Sample] = []
    bad: list[BadSample] = []
    first_line: dict[str, int] = {}
    for lineno, cells in records:
        raw = cells[col_path]
        where = f"{csv_path} line {lineno}"
        if not raw:
            bad.append(BadSample(f"line-{lineno}", where, f"empty '{col_path}'"))
            continue
        sid = _normalise_id(raw)
        source = f"{where} ({raw})"
        if sid in first_line:
            bad.append(BadSample(f"{sid}@line-{lineno}", source, f"path listed again (first on line {first_line[sid]})"))
            continue
        first_line[sid] = lineno
        target = Path(sid) if Path(sid).is_absolute() else root / sid
        problem = link_problem(target, root)
        if problem and problem != "link outside the dataset root":
            bad.append(BadSample(sid, source, problem))
            continue
        if not inside(target, root):
            bad.append(BadSample(sid, source, f"path escapes the manifest's folder {root}"))
            continue
        if not target.is_file():
            bad.append(BadSample(sid, source, "file not found" if not target.exists() else "not a file"))
            continue
        if not is_image_name(target) and target.suffix:
            bad.append(BadSample(sid, source, f"not an image extension '{target.suffix}'"))
            continue
        label = cells[col_label]
        label = label_map.get(label, label)
        if not label:
            bad.append(BadSample(sid, source, f"empty label in column '{col_label}'"))
            continue
        if label not in index:
            bad.append(BadSample(sid, source, f"unknown label '{label}' (classes: {', '.join(class_list)})"))
            continue
        split = None
        if col_split is not None:
            split = split_name(cells[col_split])
            if split is None:
                bad.append(BadSample(sid, source, f"split '{cells[col_split]}' is not train/val/test"))
                continue
        group = (cells[col_group] or None) if col_group is not None else None
        if Path(sid).is_absolute():
            sid = target.resolve().relative_to(root).as_posix()
        samples.append(Sample(sid, index[label], split, group, str(target.resolve())))
    notes = [f"manifest columns: path={col_path}, label={col_label}, split={col_split or '-'}, group={col_group or '-'}"]
    return FileDataset("csv", class_list, samples, root=root, location=str(csv_path), bad=bad, notes=notes, warnings=warnings)
