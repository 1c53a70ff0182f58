"""The CLI path and `import medprobe` must not import torch (checked in fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "timm", "open_clip", "sklearn")


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["models", "list"], ["models", "show", "lingshu-7b"], ["plugins"], ["extract", "--help"], ["cache", "--help"]],
)
def test_cli_does_not_import_heavy_libraries(argv):
    code = (
        "import sys\nfrom medprobe.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded], f"{argv} imported {[m for m in HEAVY if m in loaded]}"


def test_import_medprobe_is_light():
    loaded = _modules_after("import medprobe")
    assert "torch" not in loaded
