"""Every citation in the repository points to a public source a reader can open (issue 15, item 8):
no file cites the study notes that live outside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: names of notes that are not part of the repository (built here so this file does not match itself)
PRIVATE = [name + ".md" for name in ("model-facts", "paper", "layer-maps", "anchors", "offline-setup")] + ["shared" + "/"]


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        return [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist): walk the tree
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]


def test_no_file_cites_notes_outside_the_repository():
    hits = []
    for path in _tracked_files():
        if not path.is_file() or path.suffix in (".png", ".jpg", ".safetensors", ".npy", ".gz", ".zip", ".ipynb_checkpoints"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for name in PRIVATE:
                if name in line:
                    hits.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
    assert not hits, "citations of notes that are not in the repository:\n" + "\n".join(hits)
