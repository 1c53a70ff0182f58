"""Progress bars: tqdm's notebook-aware front end, quiet when output is not a terminal."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, initial: int = 0, desc: str = "", enabled: bool | None = None) -> Any:
    """``enabled=None`` shows the bar only on an interactive stderr (or in Jupyter)."""
    from tqdm.auto import tqdm

    if enabled is None:
        in_notebook = "ipykernel" in sys.modules
        enabled = in_notebook or sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False)
