"""Progress bars: quiet when stderr is not a terminal, shown inside a real Jupyter kernel."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
from nbclient import NotebookClient


def test_quiet_when_stderr_is_not_a_terminal():
    code = (
        "from medprobe.progress import in_jupyter, progress_bar\n"
        "bar = progress_bar(3, desc='piped')\n"
        "forced = progress_bar(3, desc='forced', enabled=True)\n"
        "shown = not forced.disable\n"
        "forced.update(3); forced.close()\n"
        "print(in_jupyter(), bar.disable, shown)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]
    assert "piped" not in out.stderr and "forced" in out.stderr


def test_shown_in_a_jupyter_kernel(tmp_path):
    """The kernel named ``python3`` is this interpreter's ipykernel (nothing registered
    globally), and a bar with the default ``enabled=None`` is shown there."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import sys; print(sys.executable)"),
        nbformat.v4.new_code_cell(
            "from medprobe.progress import in_jupyter, progress_bar\n"
            "bar = progress_bar(3, desc='kernel-bar')\n"
            "shown = not bar.disable\n"
            "bar.update(3); bar.close()\n"
            "print(in_jupyter(), shown, type(bar).__module__)"
        ),
    ]
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    executable = nb.cells[0].outputs[0]["text"].strip()
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    streams: dict[str, str] = {}
    for o in nb.cells[1].outputs:
        if o["output_type"] == "stream":
            streams[o["name"]] = streams.get(o["name"], "") + o["text"]
    in_jupyter, shown, front_end = streams["stdout"].split()
    assert (in_jupyter, shown) == ("True", "True")
    # the widget front end when ipywidgets is installed, else tqdm's text bar on the kernel's stderr
    assert front_end in ("tqdm.notebook", "tqdm.std")
    if front_end == "tqdm.std":
        assert "kernel-bar" in streams.get("stderr", "")


def _kernel_outputs(nb, tmp_path) -> dict[str, str]:
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    streams: dict[str, str] = {}
    for cell in nb.cells:
        for o in cell.outputs:
            text = o.get("text") or "".join(str(v) for v in (o.get("data") or {}).values()) or str(o.get("evalue", ""))
            streams[o.get("name", o["output_type"])] = streams.get(o.get("name", o["output_type"]), "") + text
    return streams


def test_broken_ipywidgets_falls_back_to_the_text_bar_without_iprogress_warning(tmp_path, monkeypatch):
    """An ipywidgets that is found but does not import (a broken install) must not give tqdm's
    "IProgress not found" error / warning: the text bar is drawn instead."""
    broken = tmp_path / "site" / "ipywidgets"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this ipywidgets install is broken')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import importlib.util, warnings\n"
            "warnings.simplefilter('always')\n"
            "from medprobe.progress import progress_bar\n"
            "bar = progress_bar(3, desc='fallback-bar')\n"
            "shown = not bar.disable\n"
            "bar.update(3); bar.close()\n"
            "print(importlib.util.find_spec('ipywidgets') is not None, shown, type(bar).__module__)"
        ),
    ]
    streams = _kernel_outputs(nb, tmp_path)
    assert streams["stdout"].split() == ["True", "True", "tqdm.std"]
    assert "fallback-bar" in streams.get("stderr", "")
    assert "IProgress" not in "".join(streams.values()) and "error" not in streams
