"""The three baseline families register through their entry points without importing torch,
timm, open_clip or transformers, and their adapters resolve from the lazy factories."""

from __future__ import annotations

import json
import subprocess
import sys

FAMILIES = {
    "timm": "medprobe_timm.adapter:TimmAdapter",
    "open_clip": "medprobe_open_clip.adapter:OpenClipAdapter",
    "hf_clip": "medprobe_hf_clip.adapter:HFClipAdapter",
}


def test_families_register_lazily():
    code = (
        "import sys, json\n"
        "from medprobe.plugins import get_plugins\n"
        "s = get_plugins()\n"
        f"fams = {sorted(FAMILIES)!r}\n"
        "print(json.dumps({'factories': {f: s.adapters.get(f) for f in fams},\n"
        "                  'errors': [str(e) for e in s.errors if e.plugin in fams],\n"
        "                  'heavy': [m for m in ('torch', 'timm', 'open_clip', 'transformers') if m in sys.modules]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"factories": FAMILIES, "errors": [], "heavy": []}


def test_adapters_resolve():
    from medprobe.models.zoo import get_adapter

    for family, factory in FAMILIES.items():
        adapter = get_adapter(family)
        assert adapter.family == family
        assert f"{type(adapter).__module__}:{type(adapter).__name__}" == factory
