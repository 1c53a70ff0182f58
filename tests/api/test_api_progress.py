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
