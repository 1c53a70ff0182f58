"""Conformance kit for plugin authors (also a pytest plugin: fixture ``medprobe_conformance``).

One call checks that a model reference is usable end to end offline::

    from medprobe.testing import check_model

    def test_my_plugin():
        report = check_model("my-model")      # card id registered by your plugin
        assert report.ok, report.problems

or with the fixture (pytest finds it through the ``pytest11`` entry point)::

    def test_my_plugin(medprobe_conformance):
        medprobe_conformance("my-model")       # raises AssertionError listing every problem

What is checked: the card loads and names a registered adapter; the tiny random model builds
(remote-code families: the recorded listing resolves); the layer map validates against the real
module tree, ids are unique, stages are in pipeline order and depths increase from 0 to 1; a
capture of every layer on two generated images returns finite (2, width) features per readout.

``fake_distribution`` builds an installed-looking distribution (dist-info with entry points) in
a temporary folder, for testing plugin discovery without pip.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .layermap import STAGES, is_canonical

try:  # the fixture is optional: importing this module must not require pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]


@dataclass
class ConformanceReport:
    model: str
    problems: list[str] = field(default_factory=list)
    layers: int = 0
    features: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def synthetic_images(n: int = 2, size: int = 64, seed: int = 0) -> list[Any]:
    """``n`` deterministic RGB PIL images (smooth random patterns), for smoke checks only."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(1, 4, size=3)
        img = np.stack([np.sin(2 * np.pi * (f[c] * xx + rng.uniform() * yy)) for c in range(3)], axis=-1)
        out.append(Image.fromarray(((img + 1) * 127.5).astype("uint8"), "RGB"))
    return out


def check_layer_map(lmap: Any) -> list[str]:
    """Structural checks of a resolved :class:`~medprobe.layermap.LayerMap`."""
    problems = []
    ids = lmap.ids
    if not ids:
        return [f"{lmap.model}: empty layer map"]
    if len(set(ids)) != len(ids):
        problems.append(f"{lmap.model}: duplicate layer ids")
    odd = [s.id for s in lmap.layers if not is_canonical(s.stage, s.id)]
    if odd:  # the pre-load --layers check (medprobe.layermap.check_patterns) relies on canonical ids
        problems.append(f"{lmap.model}: layer ids not of their stage's canonical form (layermap.CANONICAL_IDS): {odd}")
    order = [STAGES.index(s.stage) for s in lmap.layers]
    if order != sorted(order):
        problems.append(f"{lmap.model}: stages out of pipeline order")
    depths = [s.depth for s in lmap.layers]
    if len(depths) > 1 and not (depths[0] == 0.0 and depths[-1] == 1.0 and all(a < b for a, b in zip(depths, depths[1:]))):
        problems.append(f"{lmap.model}: depths must increase strictly from 0 to 1")
    for stage in {s.stage for s in lmap.layers}:
        idx = [s.index for s in lmap.stage(stage)]
        if idx != sorted(idx):
            problems.append(f"{lmap.model}: layers of stage '{stage}' out of order")
    return problems


def check_card(card: Any) -> list[str]:
    from .plugins import get_plugins

    problems = []
    if card.family not in get_plugins().adapters:
        problems.append(f"card '{card.id}': adapter family '{card.family}' is not registered")
    for fact in card.unverified:
        if not hasattr(card, fact):
            problems.append(f"card '{card.id}': unverified names unknown field '{fact}'")
    return problems


def check_model(ref: str, capture: bool = True, seed: int = 0) -> ConformanceReport:
    """Run every conformance check on one model reference; never raises for a failed check."""
    from .models.zoo import get_adapter, get_card, resolve_layers

    report = ConformanceReport(ref)
    try:
        card = get_card(ref)
    except Exception as exc:
        report.problems.append(f"card: {exc}")
        return report
    report.problems += check_card(card)
    if report.problems:
        return report
    adapter = get_adapter(card.family)
    if card.loader not in adapter.loaders:
        report.problems.append(f"card '{card.id}': loader {card.loader!r} is not one of family '{card.family}' "
                               f"adapter's loaders {list(adapter.loaders)}")
        return report
    try:
        if adapter.needs_remote_code:
            _card, lmap = resolve_layers(ref, tiny=True)
            loaded = None
        else:
            loaded = adapter.build_tiny(card, seed=seed)
            lmap = loaded.layer_map
    except Exception as exc:
        report.problems.append(f"layer map / tiny model: {type(exc).__name__}: {exc}")
        return report
    report.layers = len(lmap)
    report.problems += check_layer_map(lmap)
    if not capture or loaded is None or report.problems:
        return report
    from .features.capture import Capture
    from .prompts import classification_question
    from .features.readouts import DEFAULT_READOUTS, applicable

    try:
        images = synthetic_images(2)
        prompt = classification_question(["normal", "lesion"]) if card.kind == "mllm" else None
        with Capture(loaded.model, list(lmap), DEFAULT_READOUTS + ("cls",), stop_early=True, model_name=card.id) as cap:
            batch = adapter.preprocess(loaded, images, prompt)
            feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    except Exception as exc:
        report.problems.append(f"capture: {type(exc).__name__}: {exc}")
        return report
    for spec in lmap:
        for name in applicable(spec, DEFAULT_READOUTS + ("cls",)):
            value = feats.get((spec.id, name))
            if value is None:
                report.problems.append(f"capture: no '{name}' features for layer '{spec.id}'")
            elif value.shape[0] != 2 or (spec.width is not None and value.shape[1] != spec.width):
                report.problems.append(f"capture: layer '{spec.id}' '{name}' has shape {tuple(value.shape)}, expected (2, {spec.width})")
    report.features = len(feats)
    return report


def assert_conformant(ref: str, capture: bool = True) -> ConformanceReport:
    report = check_model(ref, capture=capture)
    assert report.ok, f"{ref} is not conformant:\n" + "\n".join(f"  - {p}" for p in report.problems)
    return report


def fake_distribution(
    root: Path,
    name: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, str],
    version: str = "0.0.1",
) -> list[md.EntryPoint]:
    """Write ``modules`` (module name -> source) and a dist-info with ``medprobe`` entry points
    (plugin name -> "module") under ``root``, put ``root`` on ``sys.path`` and return the
    distribution's entry points (each knows its distribution, as installed ones do)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for mod, source in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[medprobe]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    dists = [d for d in md.distributions(path=[str(root)]) if d.metadata["Name"] == name]
    return [ep for ep in dists[0].entry_points if ep.group == "medprobe"]


if pytest is not None:

    @pytest.fixture
    def medprobe_conformance():
        """Call with a model reference; fails the test listing every conformance problem."""
        return assert_conformant
