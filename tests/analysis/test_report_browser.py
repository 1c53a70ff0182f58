"""report.html in a real headless browser (Chromium from the OS packages).

Each check opens the page with ``chromium --headless --dump-dom`` after injecting, into a copy of
the page only, a script that records console errors (``console.error``, uncaught exceptions,
resources that fail to load) and measures the page once it has loaded (banner box, figure alt
texts). Chromium's own console log on stderr (``--enable-logging=stderr``) is read as well.
A negative test proves the hook and the log really catch an error.

Without a Chromium binary the tests skip, unless ``MEDPROBE_REQUIRE_BROWSER=1`` (set by .ci/run
once it has installed Chromium), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medprobe.analysis.exporters import write_report
from medprobe.analysis.report import build_report

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_report import baseline_entry, mllm_entry  # noqa: E402

VIEWPORT = (1280, 800)  # a standard laptop viewport
BANNER_RGB = (0xB0, 0x00, 0x20)  # .banner background in exporters._CSS

PROBE_JS = """
<script>
window.__errs = [];
(function () {
  const orig = console.error;
  console.error = function (...a) { window.__errs.push('console.error: ' + a.join(' ')); orig.apply(console, a); };
  window.addEventListener('error', e => {
    const t = e.target;
    window.__errs.push(t && t !== window && (t.src || t.href) ? 'failed to load: ' + (t.src || t.href).slice(-120)
                                                                : 'uncaught: ' + e.message);
  }, true);
  window.addEventListener('unhandledrejection', e => window.__errs.push('unhandled rejection: ' + e.reason));
  window.addEventListener('load', () => {
    const b = document.getElementById('synthetic-banner');
    const r = b ? b.getBoundingClientRect() : null;
    const figs = [...document.querySelectorAll('img, svg')].map(el => ({
      tag: el.tagName.toLowerCase(),
      alt: el.tagName.toLowerCase() === 'img' ? (el.getAttribute('alt') || '')
           : (el.getAttribute('aria-label') || (el.querySelector('title') || {}).textContent || ''),
      loaded: el.tagName.toLowerCase() === 'img' ? (el.complete && el.naturalWidth > 0) : true,
    }));
    const out = {errors: window.__errs, viewport: [innerWidth, innerHeight],
                 banner: r ? {top: r.top, bottom: r.bottom, width: r.width, height: r.height,
                              visible: getComputedStyle(b).visibility !== 'hidden' && getComputedStyle(b).display !== 'none'}
                           : null,
                 figures: figs};
    const p = document.createElement('pre'); p.id = '__medprobe_probe'; p.textContent = JSON.stringify(out);
    document.body.appendChild(p);
  });
})();
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("MEDPROBE_REQUIRE_BROWSER") == "1":
        pytest.fail("MEDPROBE_REQUIRE_BROWSER=1 but no chromium binary is on PATH")
    pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it)")


def _flags(tmp: Path) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp / 'chromium-profile'}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
    ]  # fmt: skip


def inspect_page(html_path: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Open a copy of ``html_path`` with the probe script injected; returns (what the script
    measured, Chromium's console lines from stderr)."""
    text = html_path.read_text()
    head = text.index("<head>") + len("<head>") if "<head>" in text else 0
    probe = tmp / f"probed-{html_path.name}"
    probe.write_text(text[:head] + PROBE_JS + text[head:])
    out = subprocess.run([chromium(), *_flags(tmp), "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    m = re.search(r'<pre id="__medprobe_probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"the page did not finish loading in Chromium (rc {out.returncode}): {out.stderr[-2000:]}"
    data = json.loads(m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&"))
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line]
    return data, console


def console_errors(data: dict, console: list[str]) -> list[str]:
    """Errors from the hook, plus Chromium's console lines for errors (uncaught, failed loads,
    console.error messages the hook already lists are not repeated)."""
    errors = list(data["errors"])
    for line in console:
        if "Uncaught" in line or "Failed to load" in line or "ERROR:CONSOLE" in line:
            errors.append(line)
    return errors


def screenshot(html_path: Path, tmp: Path) -> Path:
    shot = tmp / "shot.png"
    subprocess.run([chromium(), *_flags(tmp), f"--screenshot={shot}", html_path.as_uri()], capture_output=True,
                   timeout=120, check=True)  # fmt: skip
    return shot


def three_runs_report(tmp: Path) -> Path:
    """A synthetic report of three runs of one card (pretrained, random weights, LoRA) and a baseline."""
    runs = []
    for key, label, weights in (("aaa1", "pretrained", "pretrained"), ("bbb2", "random weights", "random"),
                                ("ccc3", "pretrained + LoRA sft (1a2b3c4d)", "pretrained")):  # fmt: skip
        e = mllm_entry()
        e["manifest"] = {"run_key": key}
        e["condition"] = {"weights": weights, "label": label}
        runs.append(e)
    rep = build_report(runs + [baseline_entry()], extra={"command": "medprobe report runs/a runs/b runs/c --out rep"})
    return write_report(rep, tmp / "rep", ("html",))["html"]


@pytest.mark.slow
def test_report_page_renders_without_console_errors_with_alt_texts_and_a_visible_banner(tmp_path):
    page = three_runs_report(tmp_path)
    data, console = inspect_page(page, tmp_path)
    assert console_errors(data, console) == []
    figures = data["figures"]
    assert len(figures) == 3, figures  # overview, per-model panels, FHS
    assert all(f["alt"].strip() and f["loaded"] for f in figures), figures
    width, height = data["viewport"]
    banner = data["banner"]
    assert banner and banner["visible"] and banner["height"] > 20
    assert 0 <= banner["top"] and banner["bottom"] <= height, (banner, data["viewport"])
    # the banner's red is on the screenshot's first screen (no scrolling)
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(screenshot(page, tmp_path)).convert("RGB")).astype(int)
    assert img.shape[1] == VIEWPORT[0]
    top = img[: min(img.shape[0], height)]
    red = int((np.abs(top - np.array(BANNER_RGB)).max(axis=2) <= 6).sum())
    assert red > 0.02 * VIEWPORT[0] * 60, red  # the banner box, not a stray pixel


@pytest.mark.slow
def test_the_browser_check_catches_console_errors_missing_alt_and_a_hidden_banner(tmp_path):
    page = three_runs_report(tmp_path)
    text = page.read_text()
    bad = tmp_path / "bad.html"
    broken = text.replace("<body>", "<body><div style='height:2000px'>spacer</div>", 1)
    broken = broken.replace('<img alt="', '<img data-alt="', 1)  # one figure loses its alt text
    broken = broken.replace("</body>", "<script>console.error('boom from the page'); missingFunction();</script>"
                            '<img alt="gone" src="missing-figure.png"></body>')  # fmt: skip
    bad.write_text(broken)
    data, console = inspect_page(bad, tmp_path)
    errors = console_errors(data, console)
    assert any("boom from the page" in e for e in errors), errors
    assert any("missingFunction" in e for e in errors), errors
    assert any("missing-figure.png" in e for e in errors), errors
    assert any("boom from the page" in line for line in console), console  # Chromium's own log saw it too
    assert any(not f["alt"] for f in data["figures"])
    assert data["banner"]["top"] > data["viewport"][1]  # pushed below the first screen
