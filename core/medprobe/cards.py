"""Zoo cards: one frozen record per checkpoint, loaded from TOML files.

A card says *what* a checkpoint is (hub id, architecture class, sizes, license, encoder /
connector / LLM, image tokens, prompt) and *which adapter family* loads it. Every fact can carry
its source in ``sources`` (fact name -> where it was read); facts that could not be verified
are listed in ``unverified`` and shown as such by ``medprobe models show``.

TOML layout (one file may hold many cards)::

    [[card]]
    id = "lingshu-7b"
    kind = "mllm"                       # "mllm" | "baseline"
    family = "qwen2_5_vl"               # adapter family
    title = "Lingshu-7B"
    hub_id = "lingshu-medical-mllm/Lingshu-7B"
    architecture = "Qwen2_5_VLForConditionalGeneration"
    loader = "stock"                    # one of the family adapter's `loaders` (stock, convert, remote-code, timm, ...)
    ...
    [card.sources]
    architecture = "model card: 'built on top of Qwen2.5VL'; third-party loaders"
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .registry import MedprobeError

KINDS = ("mllm", "baseline")


class CardError(MedprobeError):
    """A card file or card is malformed; the message names the file and the card."""


@dataclass(frozen=True)
class ModelCard:
    id: str
    kind: str
    family: str
    title: str = ""
    hub_id: str | None = None
    revision: str | None = None
    architecture: str = ""
    loader: str = "stock"
    params: str | None = None
    license: str | None = None
    vision_encoder: str | None = None
    connector: str | None = None
    llm: str | None = None
    image_tokens: str | None = None
    prompt_template: str | None = None
    #: baselines: cnn | mlp | vit | hybrid | contrastive; MLLMs: medical | general
    category: str | None = None
    #: part of the seed paper's model set
    in_paper: bool = False
    #: card id of the general base model this checkpoint was tuned from
    base_model: str | None = None
    #: ``"package:path/to/file.json"``: package data holding the published ``config.json`` (and
    #: processor settings) the full-size layer map is built from on the meta device
    #: (:mod:`medprobe.models.meta`); the file names whose config it is and where it was read
    published_config: str | None = None
    #: position of this card in ``medprobe demo`` (the zoo picks the demo's models; ``None``: not in it)
    demo: int | None = None
    #: adapter-specific settings (timm name, vision_feature_layer, fixed resolution, ...)
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: fact name -> source of that fact
    sources: Mapping[str, str] = field(default_factory=dict)
    #: fact names that could not be verified from the published config / code
    unverified: tuple[str, ...] = ()
    notes: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not self.id or self.id != self.id.strip() or " " in self.id:
            problems.append(f"id {self.id!r} must be a non-empty string without spaces")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} must be one of {KINDS}")
        if not self.family:
            problems.append("family (adapter) is required")
        if not self.loader or self.loader != self.loader.strip():
            problems.append(f"loader {self.loader!r} must be a non-empty name (one the family adapter declares in `loaders`)")
        if self.published_config is not None and ":" not in self.published_config:
            problems.append(f"published_config {self.published_config!r} must read 'package:path/to/file.json'")
        if problems:
            raise CardError(f"card '{self.id}': " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "<dict>") -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        card_id = data.get("id", "?")
        if unknown:
            raise CardError(f"{where}: card '{card_id}' has unknown fields {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("unverified", "aliases"):
            if key in values:
                values[key] = tuple(values[key])
        for key in ("settings", "sources"):
            if key in values and not isinstance(values[key], Mapping):
                raise CardError(f"{where}: card '{card_id}': {key} must be a table")
        try:
            return cls(**values)
        except CardError as exc:
            raise CardError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise CardError(f"{where}: card '{card_id}': {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["settings"] = dict(self.settings)
        out["sources"] = dict(self.sources)
        out["unverified"] = list(self.unverified)
        out["aliases"] = list(self.aliases)
        return out

    #: the fields that decide what a model computes; the others document the checkpoint
    IDENTITY_FIELDS = ("id", "kind", "family", "hub_id", "revision", "architecture", "loader", "prompt_template",
                       "settings")

    def identity(self) -> dict[str, Any]:
        """The card as run keys hash it: only :data:`IDENTITY_FIELDS`, so correcting a citation, a
        note or an UNVERIFIED mark does not invalidate stored runs (the full card is still recorded
        in every manifest)."""
        full = self.to_dict()
        return {name: full[name] for name in self.IDENTITY_FIELDS}

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    def matches(self, pattern: str) -> bool:
        """Wildcard match (fnmatch, case-insensitive) on id, title, aliases and hub id."""
        pat = pattern.lower()
        if not any(ch in pat for ch in "*?["):
            pat = f"*{pat}*"
        names = [self.id, self.title, self.hub_id or "", *self.aliases]
        return any(fnmatch.fnmatch(n.lower(), pat) for n in names if n)


def load_card_file(path: str | Path) -> list[ModelCard]:
    """Read every ``[[card]]`` of one TOML file; errors name the file and the card."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CardError(f"{path}: cannot read card file: {exc}") from None
    raw = data.get("card")
    if not isinstance(raw, list):
        raise CardError(f"{path}: expected one or more [[card]] tables")
    cards = [ModelCard.from_dict(item, where=str(path)) for item in raw]
    seen: dict[str, int] = {}
    for c in cards:
        seen[c.id] = seen.get(c.id, 0) + 1
    dups = [k for k, v in seen.items() if v > 1]
    if dups:
        raise CardError(f"{path}: duplicate card ids {dups}")
    return cards


def filter_cards(
    cards: Iterable[ModelCard],
    kind: str | None = None,
    family: str | None = None,
    pattern: str | None = None,
) -> list[ModelCard]:
    out = []
    for c in cards:
        if kind and c.kind != kind:
            continue
        if family and not fnmatch.fnmatch(c.family.lower(), family.lower()):
            continue
        if pattern and not c.matches(pattern):
            continue
        out.append(c)
    return sorted(out, key=lambda c: (c.kind, c.family, c.id))
