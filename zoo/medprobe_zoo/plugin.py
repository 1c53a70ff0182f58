"""Registers every card in ``medprobe_zoo/cards/*.toml`` (no torch, no model code)."""

from __future__ import annotations

from importlib import resources

from medprobe import hookimpl
from medprobe.cards import ModelCard, load_card_file


def all_cards() -> list[ModelCard]:
    """Every card shipped in this package, in file order."""
    cards: list[ModelCard] = []
    folder = resources.files("medprobe_zoo").joinpath("cards")
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".toml"):
            with resources.as_file(item) as path:
                cards.extend(load_card_file(path))
    return cards


@hookimpl
def register_models(register):
    for card in all_cards():
        register(card)
