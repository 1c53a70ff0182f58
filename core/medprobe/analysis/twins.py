"""Report fields from the run manifests: the weights condition, the leakage record, and the
random-weights floor (a model's random-weights twin beside it).

:func:`decorate_entries` is called by :func:`medprobe.analysis.report.build_report` on the model
entries (each holds its run ``manifest``). It adds to every entry:

* ``condition``: the manifest's ``condition`` block (``weights`` = ``pretrained`` | ``random`` |
  ``tiny-random``, ``source``, ``seed``, ``lora``; ``None`` for inputs without a run manifest);
* ``leakage``: the manifest's ``leakage`` block (exact / near-duplicate clusters, cross-split
  samples, examples; ``None`` when the run recorded none);
* ``twin_of``: on a random-weights twin, the id of the report row of its model (same card, same
  dataset), else ``None``;
* ``random_floor``: on a model whose twin is in the report, ``{"model": twin row id, "weights": the
  twin's weights label, "layers": {probe: [{"id", "readout", "accuracy", "ci95"}, ...]}}`` -- the
  twin's per-layer accuracies, the floor that architecture + probe give without training; else ``None``.

:func:`leakage_banner` is the report's one-line leakage banner (``report["leakage_banner"]``).
No torch here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def _card_id(entry: Mapping[str, Any]) -> str:
    return str((((entry.get("manifest") or {}).get("model") or {}).get("card") or {}).get("id") or entry["id"])


def _lora_path(cond: Mapping[str, Any] | None) -> Any:
    return ((cond or {}).get("lora") or {}).get("path")


def row_id(card_id: str, condition: Mapping[str, Any] | None) -> str:
    """The report row id of a run: the card id, ``<card>+random-init`` for a random-weights twin."""
    from ..models.condition import is_random_twin

    return f"{card_id}+random-init" if is_random_twin(condition) else card_id


def decorate_entries(entries: Sequence[dict[str, Any]]) -> None:
    """Add ``condition``, ``leakage``, ``twin_of`` and ``random_floor`` to each entry, in place."""
    from ..models.condition import is_random_twin

    for e in entries:
        manifest = e.get("manifest") or {}
        e["condition"] = manifest.get("condition")
        e["leakage"] = manifest.get("leakage")
        e["twin_of"] = None
        e["random_floor"] = None
    models = [e for e in entries if not is_random_twin(e["condition"])]
    for twin in (e for e in entries if is_random_twin(e["condition"])):
        fingerprint = ((twin.get("manifest") or {}).get("dataset") or {}).get("fingerprint")
        for m in models:
            same_data = ((m.get("manifest") or {}).get("dataset") or {}).get("fingerprint") == fingerprint
            if _card_id(m) == _card_id(twin) and same_data and _lora_path(m["condition"]) == _lora_path(twin["condition"]):
                twin["twin_of"] = m["id"]
                if m["random_floor"] is None:
                    m["random_floor"] = floor_of(twin)
    return None


def floor_of(twin: Mapping[str, Any]) -> dict[str, Any]:
    """The ``random_floor`` block made from a twin's report rows."""
    layers: dict[str, list[dict[str, Any]]] = {}
    for r in twin.get("layers", []):
        layers.setdefault(r["probe"], []).append(
            {"id": r["id"], "readout": r["readout"], "accuracy": r.get("accuracy"), "ci95": r.get("ci95")}
        )
    return {"model": twin["id"], "weights": ((twin.get("manifest") or {}).get("model") or {}).get("weights"),
            "layers": layers}


def leakage_banner(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """One line naming the duplicates / patient leaks of the report's data, or ``None``."""
    from ..datasets.groups import summary_line

    for e in entries:
        line = summary_line(e.get("leakage"))
        if line and line.startswith("LEAKAGE"):
            return line
    return None
