"""Adapter for a small three-stage CNN (the model class lives here, so it is fully offline)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medprobe.adapter import AdapterError, Batch, LoadedModel, ModelAdapter
from medprobe.cards import ModelCard
from medprobe.layermap import LayerGroup

WIDTHS = (8, 16, 32)
IMAGE_SIZE = 32


class ExampleCNN(nn.Module):
    """(B, 3, 32, 32) -> stages (B, 8, 16, 16), (B, 16, 8, 8), (B, 32, 4, 4) -> head (B, 32)."""

    def __init__(self) -> None:
        super().__init__()
        chans = (3, *WIDTHS)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU())
            for i in range(len(WIDTHS))
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class ExampleCNNAdapter(ModelAdapter):
    family = "example_cnn"
    version = "1"

    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        return [
            LayerGroup("cnn", "stage.{i}", ("stages",), count=len(WIDTHS), layout="NCHW"),
            LayerGroup("head", "head", ("head",), repeated=False, layout="NC", width=WIDTHS[-1]),
        ]

    def _wrap(self, card: ModelCard, model: nn.Module, weights: str) -> LoadedModel:
        model.eval()
        lmap = self.layer_map(card, model, config={}, resolved_against=f"ExampleCNN ({weights})")
        return LoadedModel(adapter=self, card=card, model=model, layer_map=lmap, weights=weights, extra={"image_size": IMAGE_SIZE})

    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        torch.manual_seed(seed)
        return self._wrap(card, ExampleCNN(), f"tiny-random(seed={seed})")

    def load(self, card: ModelCard, source: str | None = None, **options: Any) -> LoadedModel:
        if source is None:
            raise AdapterError("example-cnn has no hub weights: pass a safetensors file as the source")
        from safetensors.torch import load_file

        model = ExampleCNN()
        result = model.load_state_dict(load_file(source), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise AdapterError(f"{source}: missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}")
        return self._wrap(card, model, f"local:{source}")

    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32) / 255.0 for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return Batch(inputs={"pixel_values": (x - 0.5) / 0.5}, size=len(images))

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        loaded.model(**batch.inputs)
