"""Layer maps: canonical layer ids mapped to the module paths that get hooked.

A family declares its map compactly as :class:`LayerGroup` s (a stage, an id template, candidate
module paths for several transformers versions, a count taken from the config) and
:func:`resolve_layer_map` expands and validates them against a real module tree, given only as
the list of names ``model.named_modules()`` yields (so a recorded listing works too, for models
whose code cannot be imported here).

Canonical ids (:data:`CANONICAL_IDS`; :func:`resolve_layer_map` refuses any other)::

    stem                      a stem before the first stage, stage "stem"
    stage.0 … stage.N         CNN stages (timm feature_info), stage "cnn"
    vision.00 … vision.NN     vision encoder blocks (ViT/CLIP/SigLIP/Qwen-ViT)
    connector                 projector / merger output
    llm.00 … llm.NN           LLM decoder layers
    head                      classifier head / pooled output (baselines)

Because every model's ids have these forms, a ``--layers`` pattern can be checked before any
model is loaded (:func:`check_patterns`: a misspelt ``vison.*`` or ``lm.5`` matches no id any
model can have and is refused with the close names); that a well-formed pattern matches a layer
of *this* model (``llm.40`` of a 28-layer LLM) is checked once its map is resolved
(:meth:`LayerMap.select`).

Each :class:`LayerSpec` records the module path, stage, position in its stage, relative depth
0..1 over the whole model, the tensor layout its hook sees and its width:

=========  ==============================================================
layout     hook output
=========  ==============================================================
``NCHW``   (B, C, H, W) feature map (CNN stages)
``NLC``    (B, T, C) tokens (ViT blocks, connector, LLM layers)
``packed`` (sum_T, C) tokens of all images concatenated (Qwen-VL vision)
``NC``     (B, C) pooled vectors
=========  ==============================================================
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .registry import MedprobeError

STAGES = ("stem", "cnn", "vision", "connector", "llm", "head")
LAYOUTS = ("NCHW", "NLC", "packed", "NC")
#: stage -> the paper's module (V, C, L) it belongs to for FHS
MODULE_OF_STAGE = {"stem": "vision", "cnn": "vision", "vision": "vision", "connector": "connector", "llm": "llm", "head": "head"}
#: stage -> the id of its layer ``i`` (``str.format`` template; no ``{i}``: the stage has one layer)
CANONICAL_IDS = {"stem": "stem", "cnn": "stage.{i}", "vision": "vision.{i:02d}", "connector": "connector",
                 "llm": "llm.{i:02d}", "head": "head"}  # fmt: skip
#: ids are checked for form up to this many layers per stage (deeper than any model)
MAX_LAYERS_PER_STAGE = 1000


class LayerMapError(MedprobeError):
    """The layer map does not fit the module tree. ``problems`` lists every finding."""

    def __init__(self, model: str, problems: Sequence[str]):
        self.model = model
        self.problems = list(problems)
        super().__init__(f"layer map of '{model}' is invalid:\n" + "\n".join(f"  - {p}" for p in self.problems))


class LayerSelectionError(LayerMapError):
    """A ``--layers`` pattern matches no layer of the model: the map is fine, the pattern is not.
    The message names the pattern, the close patterns and the model's layer ids."""

    def __init__(self, model: str, pattern: str, ids: Sequence[str], stages: Sequence[str] = ()):
        import difflib

        self.model, self.pattern = model, pattern
        stems = list(dict.fromkeys(i.rsplit(".", 1)[0] + ".*" for i in ids if "." in i))
        vocabulary = list(dict.fromkeys([*stems, *stages, *ids]))
        close = difflib.get_close_matches(pattern, vocabulary, n=3, cutoff=0.6)
        hint = (" Did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else ""
        self.problems = [f"layer pattern '{pattern}' matches none of: {', '.join(ids)}"]
        MedprobeError.__init__(
            self,
            f"--layers: pattern '{pattern}' matches none of the layers of '{model}'.{hint} Its layers: {', '.join(ids)}"
            + (f"; stages: {', '.join(stages)}" if stages else "")
            + f" (list them with 'medprobe models layers {model} --tiny').",
        )


class LayerPatternError(LayerSelectionError):
    """A ``--layers`` pattern matches no id any model can have (checked before loading, see
    :func:`check_patterns`). The message names the pattern, the close names and the id forms."""

    def __init__(self, pattern: str, model: str | None = None, option: str = "--layers"):
        self.model, self.pattern = model or "", pattern
        close = _close_names(pattern)
        hint = (" Did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else ""
        forms = ", ".join(t.replace("{i:02d}", "NN").replace("{i}", "N") for t in CANONICAL_IDS.values())
        self.problems = [f"layer pattern '{pattern}' matches no layer id of any model"]
        MedprobeError.__init__(
            self,
            f"{option}: pattern '{pattern}' matches no layer id of any model"
            + (f" (checked before loading '{model}')" if model else "") + f".{hint} Layer ids are {forms}; "
            f"stage names: {', '.join(_STAGE_NAMES)} (list a model's layers with "
            f"'medprobe models layers {model or 'REF'} --tiny').",
        )


def split_patterns(patterns: str | Sequence[str] | None) -> list[str] | None:
    """``"vision.*, llm.0?"`` -> ``["vision.*", "llm.0?"]`` (a list is stripped); ``None`` stays ``None`` (all layers)."""
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    return [p.strip() for p in patterns if p and p.strip()]


def matches(spec: "LayerSpec", pattern: str) -> bool:
    """Whether one ``--layers`` pattern selects ``spec``: an fnmatch pattern on its id, or its stage
    or module name."""
    return fnmatch.fnmatchcase(spec.id, pattern) or spec.stage == pattern or spec.module == pattern


def check_patterns(patterns: str | Sequence[str] | None, model: str | None = None, option: str = "--layers") -> None:
    """Refuse, before any model is loaded, a layer pattern that matches no id of the canonical
    forms (:data:`CANONICAL_IDS`, up to :data:`MAX_LAYERS_PER_STAGE` layers a stage) and no stage or
    module name: it can select nothing in any model. Raises :class:`LayerPatternError` naming the
    pattern, the close names, ``model`` (when given) and the ``option`` it came from. Torch-free
    and instant, so the CLI calls it while parsing options."""
    for pattern in split_patterns(patterns) or ():
        if pattern in _STAGE_NAMES:
            continue
        rx = re.compile(fnmatch.translate(pattern))
        if not any(rx.match(i) for i in _all_canonical_ids()):
            raise LayerPatternError(pattern, model, option)


_STAGE_NAMES = tuple(dict.fromkeys([*STAGES, *MODULE_OF_STAGE.values()]))


@functools.lru_cache(maxsize=1)
def _all_canonical_ids() -> tuple[str, ...]:
    return tuple(dict.fromkeys(
        t.format(i=i) for t in CANONICAL_IDS.values() for i in range(MAX_LAYERS_PER_STAGE if "{i" in t else 1)
    ))  # fmt: skip


def is_canonical(stage: str, layer_id: str) -> bool:
    """Whether ``layer_id`` has the form :data:`CANONICAL_IDS` gives ``stage`` (``llm.07``, not ``llm.7``)."""
    template = CANONICAL_IDS.get(stage)
    if template is None:
        return False
    if "{i" not in template:
        return layer_id == template
    number = layer_id.rpartition(".")[2]
    return number.isdigit() and template.format(i=int(number)) == layer_id


def _close_names(pattern: str) -> list[str]:
    """Close canonical names for a pattern that matches none: ``vison.*`` -> ``vision.*``,
    ``llm.5`` -> ``llm.05``, ``LLM`` -> ``llm``."""
    stems = {t.split(".")[0]: t for t in CANONICAL_IDS.values() if "{i" in t}
    vocabulary = [*(s + ".*" for s in stems), *_STAGE_NAMES]
    found: list[str] = []
    word, dot, number = pattern.rpartition(".")
    if dot and number.isdigit():  # an index: the canonical spelling of that index under the closest stem
        for stem in difflib.get_close_matches(word.lower(), list(stems), n=2, cutoff=0.6):
            found.append(stems[stem].format(i=int(number)))
    for candidate in (pattern, pattern.lower()):
        found += difflib.get_close_matches(candidate, vocabulary, n=3, cutoff=0.6)
    return list(dict.fromkeys(f for f in found if f != pattern))[:3]


@dataclass(frozen=True)
class LayerSpec:
    """One hookable layer."""

    id: str
    path: str
    stage: str
    index: int
    depth: float = 0.0
    layout: str = "NLC"
    width: int | None = None
    #: CLS / register tokens at the front of an NLC sequence (ViT), excluded from patch means
    prefix_tokens: int = 0
    #: this layer's output is what the connector receives (LLaVA: vision_feature_layer)
    feeds_connector: bool = False
    #: False for blocks the MLLM computes but never passes on (after the feeding layer)
    used: bool = True

    @property
    def module(self) -> str:
        """The paper's module (``vision`` / ``connector`` / ``llm`` / ``head``)."""
        return MODULE_OF_STAGE[self.stage]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["module"] = self.module
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerSpec":
        d = {k: v for k, v in d.items() if k != "module"}
        return cls(**d)


@dataclass(frozen=True)
class LayerGroup:
    """Compact declaration of one stage's layers.

    ``candidates`` are tried in order, first match wins. With ``repeated=True`` each candidate
    is a container (``nn.ModuleList``) path and layers are ``{container}.{i}``; otherwise each
    candidate is the path of a single module. ``count`` and ``width`` are ints, or dotted config
    attribute paths (``"vision_config.num_hidden_layers"``) read from the model config; a count of
    ``None`` takes what the module tree holds.
    """

    stage: str
    id_template: str
    candidates: tuple[str, ...]
    repeated: bool = True
    count: int | str | None = None
    layout: str = "NLC"
    width: int | str | None = None
    prefix_tokens: int = 0
    #: index (negative allowed) of the block in this group whose output feeds the connector
    feeds_connector: int | None = None
    #: when set, blocks after ``feeds_connector`` are marked ``used=False``
    mark_unused_after_feed: bool = True

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage {self.stage!r} must be one of {STAGES}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} must be one of {LAYOUTS}")
        if isinstance(self.candidates, str):
            object.__setattr__(self, "candidates", (self.candidates,))


@dataclass(frozen=True)
class LayerMap:
    """The resolved, ordered layers of one model."""

    model: str
    layers: tuple[LayerSpec, ...]
    #: how the map was resolved ("module tree of tiny random X", "recorded listing Y", ...)
    resolved_against: str = ""
    notes: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[LayerSpec]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer_id: str) -> LayerSpec:
        for spec in self.layers:
            if spec.id == layer_id:
                return spec
        raise KeyError(f"layer '{layer_id}' not in the map of '{self.model}'")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.layers]

    def stage(self, stage: str) -> list[LayerSpec]:
        return [s for s in self.layers if s.stage == stage]

    def select(self, patterns: str | Sequence[str] | None = None) -> list[LayerSpec]:
        """Layers whose id matches any pattern, in model order.

        ``patterns`` is a comma-separated string or a list: fnmatch wildcards on ids
        (``vision.*``, ``llm.1?``), stage or module names (``llm``, ``cnn``), or ``*``/``None``
        for all. A pattern that matches nothing raises, naming the pattern and the ids.
        """
        patterns = split_patterns(patterns)
        if patterns is None:
            return list(self.layers)
        chosen: set[str] = set()
        for pat in patterns:
            hit = {s.id for s in self.layers if matches(s, pat)}
            if not hit:
                stages = list(dict.fromkeys([s.stage for s in self.layers] + [s.module for s in self.layers]))
                raise LayerSelectionError(self.model, pat, self.ids, stages)
            chosen |= hit
        return [s for s in self.layers if s.id in chosen]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "resolved_against": self.resolved_against,
            "notes": list(self.notes),
            "layers": [s.to_dict() for s in self.layers],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerMap":
        return cls(
            model=d["model"],
            layers=tuple(LayerSpec.from_dict(x) for x in d["layers"]),
            resolved_against=d.get("resolved_against", ""),
            notes=tuple(d.get("notes", ())),
        )


def config_value(config: Any, dotted: str) -> Any:
    """Read ``a.b.c`` from a config object or nested mapping; ``KeyError`` naming the path."""
    obj = config
    for part in dotted.split("."):
        if isinstance(obj, Mapping):
            if part not in obj:
                raise KeyError(dotted)
            obj = obj[part]
        else:
            if not hasattr(obj, part):
                raise KeyError(dotted)
            obj = getattr(obj, part)
    return obj


def _children_indices(names: set[str], container: str) -> list[int]:
    pat = re.compile(re.escape(container) + r"\.(\d+)$")
    return sorted(int(m.group(1)) for n in names if (m := pat.match(n)))


def _nearest(names: Iterable[str], path: str, n: int = 3) -> list[str]:
    names = list(names)
    close = difflib.get_close_matches(path, names, n=n, cutoff=0.6)
    if not close:  # fall back to the longest existing prefix
        parts = path.split(".")
        for k in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:k])
            kids = sorted(x for x in names if x.startswith(prefix + ".") and x.count(".") == prefix.count(".") + 1)
            if prefix in names or kids:
                close = [prefix] + kids[:n] if prefix in names else kids[:n]
                break
    return close


def resolve_layer_map(
    model: str,
    groups: Sequence[LayerGroup],
    module_names: Iterable[str],
    config: Any = None,
    resolved_against: str = "",
    notes: Sequence[str] = (),
) -> LayerMap:
    """Expand ``groups`` against a module tree and validate; raise :class:`LayerMapError` listing
    every problem (unresolved paths with the nearest existing names, count mismatches with the
    config, duplicate ids, stages out of order)."""
    names = set(module_names)
    names.discard("")
    problems: list[str] = []
    specs: list[LayerSpec] = []
    for g in groups:
        expected: int | None = None
        if isinstance(g.count, int):
            expected = g.count
        elif isinstance(g.count, str):
            try:
                expected = int(config_value(config, g.count))
            except (KeyError, TypeError, ValueError):
                problems.append(f"{g.stage}: config has no integer '{g.count}' for the layer count")
        width: int | None = None
        if isinstance(g.width, int):
            width = g.width
        elif isinstance(g.width, str):
            try:
                width = int(config_value(config, g.width))
            except (KeyError, TypeError, ValueError):
                problems.append(f"{g.stage}: config has no integer '{g.width}' for the width")

        chosen = next((c for c in g.candidates if c in names), None)
        if chosen is None:
            near = _nearest(names, g.candidates[0])
            problems.append(
                f"{g.stage}: none of the paths {list(g.candidates)} exists; nearest module names: {near or 'none'}"
            )
            continue
        if not g.repeated:
            specs.append(
                LayerSpec(g.id_template.format(i=0), chosen, g.stage, 0, layout=g.layout, width=width, prefix_tokens=g.prefix_tokens)
            )
            continue
        idx = _children_indices(names, chosen)
        if not idx:
            problems.append(f"{g.stage}: '{chosen}' has no numbered children (expected a ModuleList)")
            continue
        if idx != list(range(len(idx))):
            problems.append(f"{g.stage}: children of '{chosen}' are not numbered 0..{len(idx) - 1}: {idx}")
        n = len(idx)
        if expected is not None and expected != n:
            problems.append(f"{g.stage}: config says {expected} layers ({g.count}) but '{chosen}' holds {n}")
        feed = None
        if g.feeds_connector is not None:
            feed = g.feeds_connector % n if -n <= g.feeds_connector < n else None
            if feed is None:
                problems.append(f"{g.stage}: feeding layer index {g.feeds_connector} is outside 0..{n - 1}")
        for i in range(n):
            specs.append(
                LayerSpec(
                    id=g.id_template.format(i=i),
                    path=f"{chosen}.{i}",
                    stage=g.stage,
                    index=i,
                    layout=g.layout,
                    width=width,
                    prefix_tokens=g.prefix_tokens,
                    feeds_connector=(feed == i),
                    used=not (feed is not None and g.mark_unused_after_feed and i > feed),
                )
            )
    odd = [f"{s.id} ({s.stage}: {CANONICAL_IDS.get(s.stage, '?')})" for s in specs if not is_canonical(s.stage, s.id)]
    if odd:
        problems.append(f"layer ids not of their stage's canonical form: {', '.join(odd)}")
    ids = [s.id for s in specs]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        problems.append(f"duplicate layer ids: {dups}")
    order = [STAGES.index(s.stage) for s in specs]
    if order != sorted(order):
        problems.append("stages are out of pipeline order: " + " -> ".join(dict.fromkeys(s.stage for s in specs)))
    if problems:
        raise LayerMapError(model, problems)
    n = len(specs)
    specs = [replace(s, depth=(k / (n - 1) if n > 1 else 0.0)) for k, s in enumerate(specs)]
    return LayerMap(model=model, layers=tuple(specs), resolved_against=resolved_against, notes=tuple(notes))
