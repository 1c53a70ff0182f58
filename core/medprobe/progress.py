"""Progress bars: tqdm's notebook front end in Jupyter, a text bar on a terminal, quiet otherwise.

``progress_bar(total, enabled=None)`` decides:

* inside a Jupyter kernel (:func:`in_jupyter`): shown; ``tqdm.auto``'s widget bar when
  ``ipywidgets`` really imports (tqdm's ``IProgress`` is available), else -- ipywidgets missing,
  broken or too old -- tqdm's text bar, which the notebook shows as stderr output, with no
  "IProgress not found" warning or error;
* elsewhere: tqdm's text bar, shown only when stderr is a terminal (so logs, pipes and CI stay
  clean).

``enabled=True`` / ``False`` overrides the decision. Nothing here imports IPython: a kernel is
recognised from modules the kernel itself has already imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from typing import Any


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (notebook, JupyterLab, VS Code, Colab), False in a plain
    interpreter, a terminal IPython or a Qt console / Spyder."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    if any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ):
        return False  # consoles that show text, not widgets
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # pragma: no cover - a half-initialised IPython
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_widgets() -> bool:
    """True when tqdm's notebook front end can draw: ipywidgets imports and provides the
    ``IProgress`` widget tqdm needs (a missing, broken or too old ipywidgets gives False)."""
    if importlib.util.find_spec("ipywidgets") is None:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from tqdm.notebook import IProgress
    except Exception:  # a broken ipywidgets install: fall back to the text bar
        return False
    return IProgress is not None


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool | None = None) -> Any:
    """A tqdm bar counting ``total`` items (starting at ``initial``); see the module docstring
    for when it is shown and which front end draws it."""
    notebook = in_jupyter()
    if enabled is None:
        enabled = notebook or sys.stderr.isatty()
    if notebook and enabled and _has_widgets():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tqdm.auto's TqdmExperimentalWarning
            from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False)
