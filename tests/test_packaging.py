"""Packaging: one distribution, only medprobe-prefixed import names, package data and entry points
present. CI runs this file again after installing the built wheel (MEDPROBE_EXPECT_WHEEL=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path("/"), timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_no_generic_top_level_packages_are_installed():
    code = "import importlib.util, json; print(json.dumps({n: importlib.util.find_spec(n) is not None for n in ['core', 'plugins', 'zoo']}))"
    found = json.loads(_run(code))
    assert found == {"core": False, "plugins": False, "zoo": False}


def test_all_import_names_are_medprobe_prefixed():
    code = (
        "import importlib.metadata as md, json\n"
        "d = md.distribution('medprobe')\n"
        "tops = sorted({f.parts[0] for f in d.files or [] if f.suffix == '.py' or f.name == '__init__.py'})\n"
        "print(json.dumps(tops))"
    )
    tops = json.loads(_run(code))
    # editable installs list a finder module; wheels list package folders
    bad = [t for t in tops if not t.startswith(("medprobe", "__editable__"))]
    assert not bad, bad


def test_package_data_and_entry_points_after_install():
    code = (
        "import json, medprobe, medprobe_zoo\n"
        "from medprobe.models.zoo import list_cards\n"
        "from medprobe.plugins import get_plugins\n"
        "s = get_plugins()\n"
        "print(json.dumps({'file': medprobe.__file__, 'cards': len(list_cards()), 'plugins': sorted(p.name for p in s.plugins),"
        " 'errors': [str(e) for e in s.errors]}))"
    )
    data = json.loads(_run(code))
    assert data["cards"] >= 42, data
    assert {"zoo", "datasets", "analysis", "timm", "llava"} <= set(data["plugins"])
    assert not data["errors"], data["errors"]
    if os.environ.get("MEDPROBE_EXPECT_WHEEL"):
        assert "site-packages" in data["file"], data["file"]


def test_console_script_runs():
    exe = Path(sys.executable).with_name("medprobe")
    out = subprocess.run([str(exe), "models", "list", "--json"], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    cards = json.loads(out.stdout)
    assert sum(c["kind"] == "mllm" for c in cards) >= 16
    assert sum(c["kind"] == "baseline" for c in cards) >= 26
