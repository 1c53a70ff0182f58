"""The ``open_clip`` adapter: the image tower of an open_clip model as a probed baseline.

Card fields read: ``settings.model_name`` (an open_clip name such as ``ViT-L-14-336``, or
``hf-hub:ORG/REPO``), ``settings.pretrained`` (tag such as ``openai``; ignored for ``hf-hub:``
names) and, optionally, ``settings.model_cfg`` (the open_clip model config as a table, used to
build tiny models offline when the hub's ``open_clip_config.json`` is not cached). Free names
work as ad-hoc cards: ``open_clip:ViT-B-32:openai``, ``open_clip:hf-hub:ORG/REPO``.

**Layer map**, read from the instantiated tower:

* ``VisionTransformer`` towers: ``visual.transformer.resblocks.{i}`` -> ``vision.{i:02d}``
  (``NLC``; prefix tokens = tokens minus the patch grid, i.e. the CLS token). The blocks must
  run batch-first (``visual.transformer.batch_first``; old open_clip ran them sequence-first).
* ``TimmModel`` towers (BiomedCLIP): the timm trunk's layers derived by
  :mod:`medprobe_timm.layers` under ``visual.trunk.`` (``visual.trunk.blocks.{i}`` for a ViT
  trunk), probed through the tower's own forward.
* ``head``: the tower itself (``visual``): the (B, embed_dim) image embedding after the tower's
  pooling and projection, the vector zero-shot classification and CLIP linear probes use.

Other towers (``ModifiedResNet`` of the RN50 CLIPs) are refused with an :class:`AdapterError`.

``LoadedModel.config`` is the tower's preprocessing config (size, mean/std, resize mode).

**Tiny model**: the same tower class built from the card's model config by
``open_clip.CLIP(**config)`` with a tiny text tower: ``VisionTransformer`` keeps its depth
(so layer ids match the real checkpoint) and patch size at width 64 (2 heads of 32) and a 4x4
patch grid; ``TimmModel`` keeps its timm trunk architecture at 64 px (``set_input_size``).

**Encoders** (zero-shot classification, ``medprobe train``): :meth:`OpenClipAdapter.encode_images`
(the (B, embed_dim) image embedding, differentiable) and :meth:`OpenClipAdapter.encode_texts`
((N, embed_dim) text embeddings). Texts are tokenized by open_clip's tokenizer for the model name
(``open_clip.get_tokenizer``; ``hf-hub:`` names read theirs from the hub cache); tiny models use
open_clip's offline ``SimpleTokenizer`` (CLIP BPE, shipped with open_clip) at the tiny context length.
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import open_clip
import torch
from open_clip.factory import parse_model_name
from open_clip.timm_model import TimmModel
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import VisionTransformer

from medprobe.adapter import AdapterError, Batch, LoadedModel, ModelAdapter
from medprobe.cards import ModelCard
from medprobe.models.hf.loading import hub_access, looks_like_path, missing_directory_error
from medprobe.models.hf.tiny import seeded, tiny_resolved_against, tiny_weights
from medprobe.layermap import LayerGroup, LayerMap, resolve_layer_map
from medprobe.registry import NotFoundError, read_json_object
from medprobe.runtime import resolve_dtype, torch_dtype
from medprobe_timm.api import find_weight_file, plan_timm_layers, probe_forward, rgb_image, with_stage_indices

FIX_HINT = "pass --weights PATH (an open_clip checkpoint file, or a folder with open_clip_config.json) or --random-init"
#: model configs of hub-hosted open_clip models, for tiny builds when the hub config is not cached.
#: BiomedCLIP: the hub's open_clip_config.json (huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224): timm trunk
#: vit_base_patch16_224, timm_pool '', timm_proj 'linear', embed_dim 512, 224 px; its text tower
#: (a Hugging Face BERT, context 256) is replaced by a tiny CLIP text tower in tiny builds anyway.
KNOWN_HUB_CONFIGS: dict[str, dict[str, Any]] = {
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": {
        "embed_dim": 512,
        "vision_cfg": {
            "timm_model_name": "vit_base_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {"context_length": 256},
    },
}
#: tiny text tower: CLIP's BPE vocabulary (49408 ids, so open_clip's offline SimpleTokenizer fits) at width 32
TINY_TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_WIDTH, TINY_HEAD_WIDTH, TINY_GRID, TINY_TIMM_SIZE = 64, 32, 4, 64
PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_MAX_PREFIX = 16


class OpenClipAdapter(ModelAdapter):
    """open_clip image towers; see the module docstring."""

    family = "open_clip"
    loaders = ("open_clip",)
    encodes_images = True
    has_text_tower = True
    names_ad_hoc_models = True
    version = "1"

    # -- names and cards ---------------------------------------------------------------------
    def card_for_name(self, name: str) -> ModelCard:
        """An ad-hoc card for ``open_clip:MODEL[:TAG]`` or ``open_clip:hf-hub:ORG/REPO``."""
        schema, _ident = parse_model_name(name)
        if schema is not None:
            model_name, tag = name, None
        else:
            model_name, _, tag = name.partition(":")
            if model_name not in open_clip.list_models():
                close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5, cutoff=0.6)
                hint = f"; did you mean: {', '.join(close)}?" if close else ""
                raise NotFoundError(f"open_clip:{name}: '{model_name}' is not an open_clip model{hint}")
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            if tag and tag not in tags:
                raise NotFoundError(f"open_clip:{name}: no pretrained tag '{tag}' for '{model_name}'; tags: {tags}")
            tag = tag or (tags[0] if tags else None)
        settings: dict[str, Any] = {"model_name": model_name}
        if tag:
            settings["pretrained"] = tag
        return ModelCard(
            id=f"open_clip:{name}",
            kind="baseline",
            family=self.family,
            title=f"{model_name}" + (f" ({tag})" if tag else ""),
            hub_id=model_name.partition("hf-hub:")[2] or None,
            architecture=model_name,
            loader="open_clip",
            category="contrastive",
            settings=settings,
            notes="ad-hoc card made from the open_clip registry",
        )

    def model_name(self, card: ModelCard) -> str:
        name = card.setting("model_name") or card.architecture
        if not name:
            raise AdapterError(f"card '{card.id}': an open_clip card needs settings.model_name")
        return str(name)

    # -- layer map ---------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        """open_clip maps are derived from the instantiated tower: use :meth:`layer_map`."""
        raise AdapterError(f"card '{card.id}': open_clip layer maps are derived from an instantiated model; call layer_map(card, model)")

    def layer_map(self, card: ModelCard, model: Any, config: Any = None, resolved_against: str = "") -> LayerMap:
        """Derive the map from ``model.visual`` (see the module docstring)."""
        visual = getattr(model, "visual", None)
        names = [n for n, _ in model.named_modules()]
        size = _pair(getattr(visual, "image_size", 224))
        notes: list[str] = []
        if isinstance(visual, TimmModel):
            trunk_name = type(visual.trunk).__name__
            plan = plan_timm_layers(visual.trunk, size, name=f"{card.id} trunk ({trunk_name})", run=visual, probe_root=visual, with_head=False)
            groups = plan.groups("visual.trunk.")
            out_shape = plan.output_shape
            notes += [f"timm trunk: {n}" for n in plan.notes]
        elif isinstance(visual, VisionTransformer):
            groups, out_shape = self._vit_groups(card, visual, size)
        else:
            raise AdapterError(
                f"card '{card.id}': open_clip image tower {type(visual).__name__} is not supported "
                f"(supported: VisionTransformer, TimmModel)"
            )
        if not out_shape or len(out_shape) != 2:
            raise AdapterError(f"card '{card.id}': the open_clip image tower returned {out_shape}, expected (B, embed_dim)")
        groups.append(LayerGroup("head", "head", ("visual",), repeated=False, layout="NC", width=int(out_shape[-1])))
        notes.append("head = 'visual': the tower's (B, embed_dim) image embedding (pooled and projected)")
        lmap = resolve_layer_map(
            card.id, groups, names, None,
            resolved_against=resolved_against or f"open_clip {type(model).__name__} with {type(visual).__name__} tower",
        )
        return with_stage_indices(lmap, notes)

    def _vit_groups(self, card: ModelCard, visual: Any, size: tuple[int, int]) -> tuple[list[LayerGroup], tuple[int, ...] | None]:
        tower = visual.transformer
        if not getattr(tower, "batch_first", True):
            raise AdapterError(
                f"card '{card.id}': visual.transformer runs sequence-first (batch_first=False); medprobe hooks "
                f"(B, T, C) blocks only: upgrade open_clip_torch (>= 3.0)"
            )
        n = len(tower.resblocks)
        probe = probe_forward(visual, [f"transformer.resblocks.{i}" for i in range(n)], visual, size)
        shapes = [probe.shapes.get(f"transformer.resblocks.{i}") for i in range(n)]
        runs = [probe.calls.get(f"transformer.resblocks.{i}", 0) for i in range(n)]
        bad = [i for i, (s, c) in enumerate(zip(shapes, runs)) if c != 1 or s is None or len(s) != 3]
        if bad:
            raise AdapterError(f"card '{card.id}': visual.transformer.resblocks {bad} did not each emit one (B, T, C) tensor")
        tokens, width = shapes[0][1], shapes[0][2]  # type: ignore[index]
        grid = _pair(visual.grid_size)
        prefix = tokens - grid[0] * grid[1]
        if not 0 <= prefix <= _MAX_PREFIX:
            raise AdapterError(f"card '{card.id}': blocks emit {tokens} tokens for a {grid[0]}x{grid[1]} patch grid; cannot tell the prefix tokens")
        group = LayerGroup("vision", "vision.{i:02d}", ("visual.transformer.resblocks",), count=n, layout="NLC", width=width, prefix_tokens=prefix)
        result = probe.result[0] if isinstance(probe.result, (tuple, list)) else probe.result
        return [group], (tuple(result.shape) if isinstance(result, torch.Tensor) else None)

    # -- configs -----------------------------------------------------------------------------
    def base_config(self, card: ModelCard) -> tuple[dict[str, Any], dict[str, Any], str]:
        """(model config, preprocess config, where they came from) without downloading."""
        name = self.model_name(card)
        tag = card.setting("pretrained")
        own = card.setting("model_cfg")
        schema, ident = parse_model_name(name)
        pp: dict[str, Any] = {}
        if schema is None and tag:
            pp = dict(open_clip.get_pretrained_cfg(name, tag) or {})
        if isinstance(own, Mapping):
            return copy.deepcopy(dict(own)), pp, "card settings.model_cfg"
        if schema is None:
            cfg = open_clip.get_model_config(name)
            if cfg is None:
                close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.6)
                raise AdapterError(f"card '{card.id}': '{name}' is not an open_clip model config" + (f"; did you mean {close}?" if close else ""))
            return cfg, pp, f"open_clip built-in config '{name}'"
        if schema == "local-dir":
            path = Path(ident) / "open_clip_config.json"
            data = _read_json(path)
            return data.get("model_cfg", data), data.get("preprocess_cfg", {}), str(path)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ident, "open_clip_config.json", revision=card.revision)
        if isinstance(cached, str):
            data = _read_json(Path(cached))
            return data.get("model_cfg", data), data.get("preprocess_cfg", {}), f"cached hub config of {ident}"
        if ident in KNOWN_HUB_CONFIGS:
            return copy.deepcopy(KNOWN_HUB_CONFIGS[ident]), {}, f"medprobe's record of {ident}'s open_clip_config.json"
        raise AdapterError(
            f"card '{card.id}': the open_clip config of '{ident}' is not cached and not recorded; download it once "
            f"(open_clip.create_model('{name}')) or put it in the card as settings.model_cfg"
        )

    @staticmethod
    def _tiny_config(base: Mapping[str, Any], quick_gelu: bool) -> tuple[dict[str, Any], int | None]:
        """A tiny config of the same tower type and the tiny image side (None: keep the tower's)."""
        vision = dict(base["vision_cfg"])
        side: int | None
        if vision.get("timm_model_name"):
            vision["timm_model_pretrained"] = False
            side = TINY_TIMM_SIZE
        elif isinstance(vision.get("layers"), (list, tuple)):
            raise AdapterError("open_clip ModifiedResNet towers are not supported (supported: VisionTransformer, TimmModel)")
        else:
            patch = int(vision.get("patch_size", 16))
            side = patch * TINY_GRID
            vision.update(width=TINY_WIDTH, head_width=TINY_HEAD_WIDTH, image_size=side)
            if vision.get("attentional_pool"):
                vision["attn_pooler_heads"] = 2
        cfg = {
            "embed_dim": int(base.get("embed_dim", 512)),
            "vision_cfg": vision,
            "text_cfg": dict(TINY_TEXT_CFG),
            "quick_gelu": bool(base.get("quick_gelu", False) or quick_gelu),
        }
        return cfg, side

    # -- building and loading ----------------------------------------------------------------
    def _finish(self, card: ModelCard, model: Any, *, weights: str, device: str, dtype_name: str, resolved_against: str, extra: dict[str, Any]) -> LoadedModel:
        model = model.eval()
        lmap = self.layer_map(card, model, resolved_against=resolved_against)
        pp = PreprocessCfg(**model.visual.preprocess_cfg)
        return LoadedModel(
            adapter=self,
            card=card,
            model=model,
            layer_map=lmap,
            processor=image_transform_v2(pp, is_train=False),
            config=asdict(pp),
            weights=weights,
            device=device,
            dtype=dtype_name,
            extra={"image_size": _pair(model.visual.image_size), "model_name": self.model_name(card), **extra},
        )

    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        """A tiny random model with the card's tower type (see the module docstring)."""
        base, pp, source = self.base_config(card)
        cfg, side = self._tiny_config(base, bool(pp.get("quick_gelu")))
        with seeded(seed):
            model = open_clip.CLIP(**cfg)
        visual = model.visual
        if isinstance(visual, TimmModel) and side is not None:
            try:
                visual.set_input_size(side)
                probe_forward(visual, [], visual, (side, side))
            except Exception:  # the trunk cannot run at the tiny size: keep its own
                visual.set_input_size(_pair(base["vision_cfg"].get("image_size", 224)))
        size = _pair(visual.image_size)
        ppcfg = merge_preprocess_dict(asdict(PreprocessCfg()), pp)
        ppcfg["size"] = size
        open_clip.set_model_preprocess_cfg(model, ppcfg)
        return self._finish(
            card, model, weights=tiny_weights(seed), device="cpu", dtype_name="float32",
            resolved_against=tiny_resolved_against(f"open_clip {type(visual).__name__} tower of {self.model_name(card)} at {size[0]}x{size[1]}", seed),
            extra={"config_source": source},
        )

    def load(
        self,
        card: ModelCard,
        source: str | None = None,
        *,
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        device_map: str | None = None,
        trust_remote_code: bool = False,
        image_size: int | None = None,
        seed: int = 0,
        **options: Any,
    ) -> LoadedModel:
        """Create the model through open_clip's factory.

        ``source``: another open_clip model name, or a local checkpoint (same as ``weights``).
        ``weights``: a checkpoint file, or a folder with ``open_clip_config.json`` (``local-dir:``).
        ``random_init``: random weights (seeded by ``seed``). Otherwise the card's pretrained tag
        (or the ``hf-hub:`` repository) with ``require_pretrained=True``: a model without
        weights is an error, never a silent random model.
        """
        if device_map not in (None, "", "none"):
            raise AdapterError(f"card '{card.id}': open_clip models load on one device; device_map={device_map!r} is not supported")
        if revision:
            raise AdapterError(f"card '{card.id}': open_clip cannot pin a hub revision; download the checkpoint and pass --weights PATH")
        name = self.model_name(card)
        if source and not Path(source).expanduser().exists():
            if looks_like_path(str(source)):
                raise missing_directory_error(str(source))
            name = str(source)
        elif source and weights is None:
            weights = source
        schema, _ident = parse_model_name(name)
        tag = card.setting("pretrained") if schema is None else None
        quick = bool(schema is None and tag and (open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu"))
        dtype_name = resolve_dtype(dtype, device)
        common = dict(precision=PRECISION[dtype_name], device=device, force_quick_gelu=quick, force_image_size=image_size)
        extra: dict[str, Any] = {"ignored_options": sorted(options)} if options else {}
        extra["tokenizer_name"] = name
        try:
            if weights is not None:
                local = Path(weights).expanduser()
                model, label = self._from_local(name, schema, local, common)
                if local.is_dir() and (local / "open_clip_config.json").is_file():
                    extra["tokenizer_name"] = f"local-dir:{local.resolve()}"
            elif random_init:
                with seeded(seed):
                    model = open_clip.create_model(name, pretrained=None, load_weights=False, pretrained_text=False, **common)
                label = "random-init"
            else:
                if schema is None and not tag:
                    raise AdapterError(f"card '{card.id}': no pretrained tag (settings.pretrained) for open_clip model '{name}'; {FIX_HINT}")
                hub = self._hub_files(name, schema, tag) if schema != "local-dir" else None
                if hub is not None:  # cache first; offline or unreachable hub: one clear message, no retries
                    hub_access(f"card '{card.id}' (open_clip '{name}', {tag or 'hub'})", hub[0], None, hub[1], fix=FIX_HINT)
                model = open_clip.create_model(name, pretrained=tag, require_pretrained=True, **common)
                label = self._hub_label(name, schema, tag)
        except AdapterError:
            raise
        except Exception as exc:
            raise AdapterError(f"card '{card.id}': open_clip could not load '{name}': {type(exc).__name__}: {exc}. Offline? {FIX_HINT}") from exc
        return self._finish(card, model, weights=label, device=device, dtype_name=dtype_name, resolved_against=f"open_clip {name} ({label})", extra=extra)

    @staticmethod
    def _from_local(name: str, schema: str | None, path: Path, common: dict[str, Any]) -> tuple[Any, str]:
        if path.is_dir() and (path / "open_clip_config.json").is_file():
            model = open_clip.create_model(f"local-dir:{path.resolve()}", require_pretrained=True, **common)
            return model, f"local:{path.resolve()}"
        file = find_weight_file(path)
        if schema is None:
            model = open_clip.create_model(name, pretrained=str(file), require_pretrained=True, **common)
        else:
            model = open_clip.create_model(name, load_weights=False, pretrained_text=False, **common)
            try:
                open_clip.load_checkpoint(model, str(file), strict=True, weights_only=True)
            except RuntimeError as exc:
                raise AdapterError(f"{file}: weights do not fit open_clip model '{name}': {exc}") from exc
        return model, f"local:{file}"

    @staticmethod
    def _hub_label(name: str, schema: str | None, tag: str | None) -> str:
        if schema == "hf-hub":
            return f"hub:{parse_model_name(name)[1]}"
        pcfg = open_clip.get_pretrained_cfg(name, tag) or {}
        hub = str(pcfg.get("hf_hub") or "").rstrip("/")
        return f"hub:{hub}" if hub else f"open_clip:{name}:{tag}"

    @staticmethod
    def _hub_files(name: str, schema: str | None, tag: str | None) -> tuple[str, tuple[str, ...]] | None:
        """The hub repository and weight files open_clip would download (``hf_hub`` entries are
        ``org/repo/`` + optional file name, as open_clip reads them); ``None`` for URL-only tags."""
        defaults = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        if schema == "hf-hub":
            return parse_model_name(name)[1], defaults
        hub = str((open_clip.get_pretrained_cfg(name, tag) or {}).get("hf_hub") or "")
        if not hub:
            return None
        repo, filename = os.path.split(hub)
        return repo, ((filename,) if filename else defaults)

    # -- inputs and forward ------------------------------------------------------------------
    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        """B images -> ``pixel_values`` (B, 3, H, W) through open_clip's eval transform
        (resize, center crop, normalise), on the model's device and dtype."""
        if not images:
            raise AdapterError(f"model '{loaded.card.id}': preprocess got no images")
        x = torch.stack([loaded.processor(rgb_image(img, loaded.card.id)) for img in images])
        x = x.to(device=loaded.device, dtype=torch_dtype(loaded.dtype))
        return Batch(inputs={"pixel_values": x}, size=len(images))

    def encode_images(self, loaded: LoadedModel, batch: Batch) -> torch.Tensor:
        """The (B, embed_dim) image embedding (``model.encode_image``, not normalised), with
        gradients when the caller enables them."""
        return loaded.model.encode_image(batch.inputs["pixel_values"])

    def tokenizer(self, loaded: LoadedModel) -> Any:
        """The model's text tokenizer (cached in ``loaded.extra["tokenizer"]``): open_clip's
        ``SimpleTokenizer`` at the tiny context length for tiny models, else
        ``open_clip.get_tokenizer(model name)``."""
        tok = loaded.extra.get("tokenizer")
        if tok is not None:
            return tok
        if loaded.weights.startswith("tiny-random"):
            from open_clip.tokenizer import SimpleTokenizer

            tok = SimpleTokenizer(context_length=int(loaded.model.context_length))
        else:
            name = loaded.extra.get("tokenizer_name") or self.model_name(loaded.card)
            try:
                tok = open_clip.get_tokenizer(name)
            except Exception as exc:
                raise AdapterError(
                    f"model '{loaded.card.id}': cannot build the open_clip tokenizer of '{name}': "
                    f"{type(exc).__name__}: {exc}. Offline? the tokenizer files must be in the local cache"
                ) from exc
        loaded.extra["tokenizer"] = tok
        return tok

    def encode_texts(self, loaded: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
        """N texts -> (N, embed_dim) text embeddings (``model.encode_text``, not normalised)."""
        if not texts:
            raise AdapterError(f"model '{loaded.card.id}': encode_texts got no texts")
        tokens = self.tokenizer(loaded)(list(texts)).to(loaded.device)
        return loaded.model.encode_text(tokens)

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        """``model.visual(pixel_values)``: every block hook fires, then the embedding (``visual``)."""
        with torch.no_grad():
            loaded.model.visual(batch.inputs["pixel_values"])


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "open_clip config", AdapterError)
