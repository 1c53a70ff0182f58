"""File-system helpers shared by the folder loaders: roots, walking, masks, safe paths.

Walking skips hidden entries (``.DS_Store``, macOS ``._*`` resource forks) and ``__MACOSX``
folders; files that are not images by extension are returned separately so loaders can count
them (nothing is dropped silently). Symbolic links are followed only when they stay inside the
dataset root; links that point outside it, loop back onto themselves or point nowhere are
listed under ``ignored`` with that reason. A folder that cannot be listed (permission denied)
is a :class:`~.errors.DatasetLayoutError` naming the folder, never a class with fewer images.
"""

from __future__ import annotations

import errno
import fnmatch
import os
from pathlib import Path

from .errors import DatasetLayoutError
from .imageio import is_dicom, is_image_name

#: masks shipped next to images (BUSI: ``benign (1)_mask.png``, ``benign (4)_mask_1.png``)
MASK_PATTERNS = ("*_mask*", "*_seg.*", "*_segmentation*")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def resolve_root(location: str, scheme: str, *, want_dir: bool = True) -> Path:
    """The absolute, resolved dataset location; errors name the spec and the path."""
    if not location:
        kind = "folder" if want_dir else "file"
        raise DatasetLayoutError(f"dataset loader '{scheme}' needs a {kind}: use '{scheme}:PATH'")
    path = Path(location).expanduser()
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DatasetLayoutError(f"{scheme}: '{location}' does not exist") from None
    if want_dir and not path.is_dir():
        raise DatasetLayoutError(f"{scheme}: '{path}' is not a folder")
    if not want_dir and not path.is_file():
        raise DatasetLayoutError(f"{scheme}: '{path}' is not a file")
    return path


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX" or name == "Thumbs.db" or name == "desktop.ini"


def is_mask(name: str) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatch(low, p) for p in MASK_PATTERNS)


def unlistable(folder: Path | str, exc: OSError) -> DatasetLayoutError:
    """The error for a folder that cannot be listed (names the folder and the way out)."""
    reason = exc.strerror or str(exc)
    hint = "fix its permissions (e.g. chmod a+rx)" if isinstance(exc, PermissionError) else "check the file system"
    return DatasetLayoutError(f"cannot list folder '{folder}' ({reason}); {hint} or move it out of the dataset")


def listdir(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; an unlistable folder raises :func:`unlistable`."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise unlistable(folder, exc) from None


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name."""
    return sorted((p for p in listdir(folder) if p.is_dir() and not is_hidden(p.name)), key=lambda p: p.name)


def link_problem(path: Path, root: Path) -> str | None:
    """Why a symbolic link ``path`` is not followed (loop, broken, outside ``root``), else ``None``."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENOENT:
            return "broken symbolic link (target missing)"
        return f"unreadable symbolic link ({exc.strerror or exc})"
    except RuntimeError:
        return "symbolic link loop"
    if not inside(path, root):
        return "link outside the dataset root"
    return None


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` (resolved, symlinks followed) lies inside ``root``."""
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def walk_files(folder: Path, root: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """All files under ``folder`` (recursively, sorted): ``(image files, {reason: [relative paths]})``.

    Non-image extensions, hidden files and links escaping ``root`` go to the second result.
    """
    images: list[Path] = []
    ignored: dict[str, list[str]] = {}

    def onerror(exc: OSError) -> None:
        raise unlistable(exc.filename or folder, exc)

    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False, onerror=onerror):
        base = Path(dirpath)
        keep_dirs = []
        for d in sorted(dirnames):
            full = base / d
            problem = None if is_hidden(d) else link_problem(full, root)
            if is_hidden(d):
                ignored.setdefault("hidden", []).append(rel(full, root) + "/")
            elif problem:
                ignored.setdefault(problem, []).append(rel(full, root) + "/")
            else:
                keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            full = base / f
            problem = None if is_hidden(f) else link_problem(full, root)
            if is_hidden(f):
                ignored.setdefault("hidden", []).append(rel(full, root))
            elif problem:
                ignored.setdefault(problem, []).append(rel(full, root))
            elif not is_image_name(full) and not _extensionless_dicom(full):
                ignored.setdefault("not an image extension", []).append(rel(full, root))
            else:
                images.append(full)
    return sorted(images), ignored


def _extensionless_dicom(path: Path) -> bool:
    return not path.suffix and is_dicom(path)


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (the stable sample id)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def merge_ignored(*parts: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    return out


def split_name(name: str) -> str | None:
    """``"train"``, ``"val"`` or ``"test"`` for a folder or manifest split name, else ``None``."""
    return SPLIT_ALIASES.get(name.strip().lower())
