"""examples/quickstart.ipynb executes end to end in a fresh Jupyter kernel (so it never rots),
and what it builds with ``mp.demo`` equals what ``medprobe demo`` reports for the same data."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import cli_ok, comparable

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def _outputs(cell) -> tuple[dict[str, str], str]:
    """(mime type -> data of the display outputs, all stream text) of one executed cell."""
    data: dict[str, str] = {}
    streams = ""
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            streams += o["text"]
        elif "data" in o:
            data.update(o["data"])
    return data, streams


def _cell(nb, needle: str):
    cells = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(cells) == 1, f"expected one code cell containing {needle!r}"
    return cells[0]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed by the kernel named ``python3`` (this interpreter's ipykernel), with
    its working directory in a temporary folder and single-threaded torch (shared CI cores)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path_factory.mktemp("quickstart")
    client = NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(work)}})
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    return nb, work


def test_notebook_executes_and_shows_plot_and_tables(executed):
    nb, work = executed
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    demo, demo_streams = _outputs(_cell(nb, "mp.demo("))
    assert "SYNTHETIC" in demo["text/html"] and "<table>" in demo["text/html"]
    assert "extract lingshu-7b" in demo_streams  # progress bars are shown in Jupyter
    plot, _ = _outputs(_cell(nb, "report.plot_layers()"))
    assert "image/png" in plot
    fhs, _ = _outputs(_cell(nb, "report.fhs_frame()"))
    assert "FHS_V" in fhs["text/html"] and "lingshu-7b" in fhs["text/html"]
    diag, _ = _outputs(_cell(nb, "report.diagnosis_frame()"))
    assert "visual_representation" in diag["text/html"]
    assert (work / "demo-out" / "report.html").is_file()


def test_notebook_says_numbers_are_synthetic():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    intro = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and "SYNTHETIC" in intro and "pipeline" in intro


def test_demo_matches_its_cli_twin(executed):
    nb, work = executed
    data = re.search(r'DATA = "([^"]+)"', _cell(nb, "mp.demo(").source).group(1)
    out = work / "demo-out"
    from_api = json.loads((out / "report.json").read_text())
    cli_ok(["demo", "--out", str(out), "--dataset", data])
    from_cli = json.loads((out / "report.json").read_text())
    # the notebook names its output folder relatively ("demo-out"), the CLI call absolutely
    assert comparable(from_api, out, "demo-out") == comparable(from_cli, out, "demo-out")
    assert [m["id"] for m in from_cli["models"]] == ["lingshu-7b", "medgemma-4b", "llava-med-v1.5", "resnet50", "vit-small-patch16-224"]
