"""Hulu-Med adapter (ZJU-AI4H/Hulu-Med-4B/7B/14B/32B; HF-format remote code).

Hulu-Med's model code is not in transformers: loading needs ``trust_remote_code=True`` and is
refused without it. Without the code no tiny model can be built, so the layer map is validated
against module listings recorded from the published code (:mod:`medprobe_hulumed.listing`).

Layer map (module nesting of the published remote code: ZJUI-AI4H/Hulu-Med src/hulumed/model @a0060ad
and its HF-format copy AdvancingEther/Hulu-Med MedUniEval/models/HuluMed_Qwen2/hulumed_src @829e163):

=========  ===========================================  ======  ==========================================
stage      path                                         layout  count / width
=========  ===========================================  ======  ==========================================
vision     ``model.vision_encoder.encoder.layers.N``    packed  ``vision_encoder_config.num_hidden_layers``
                                                                / ``.hidden_size``
connector  ``model.mm_projector``                       packed  ``hidden_size``
llm        ``model.layers.N``                           NLC     ``num_hidden_layers`` / ``hidden_size``
=========  ===========================================  ======  ==========================================

The SigLIP-NaViT encoder packs all images as (sum_i t_i*h_i*w_i, C_v) with block-diagonal
attention; after ``post_layernorm`` each image's grid is resized by 1/merge (merge 1 for images)
and the projector maps (sum_i t_i*(h_i/m)*(w_i/m), C_v) -> (…, H). The last block feeds the
connector. Encoder layers return a tuple (hidden, q, k); hooks unwrap ``o[0]``. The original
(non-HF) GitHub layout nests one more ``vision_encoder`` level and is accepted as a fallback path.

Inputs: images are resized to a fixed square ``image_size`` (card setting, default 448 ->
32 x 32 patches -> 1024 image tokens at merge 1) and passed as a named ``("image", ...)`` item.
With a card ``prompt_template`` (holding ``<image>`` or ``{image}``) the rendered text goes through
the processor's plain-text path; otherwise through its conversation API (one user turn: image,
then the question; generation prompt added, no system prompt). Rows are right-padded and ``config.use_token_compression`` is switched off (it asserts batch size 1).
The forward builds ``inputs_embeds`` with the model's own ``prepare_inputs_labels_for_multimodal``
and runs the base model (``model.model``), never the LM head.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
from PIL import Image

from medprobe.adapter import AdapterError, Batch, LoadedModel, ModelAdapter
from medprobe.cards import ModelCard
from medprobe.models.hf.loading import adhoc_card, architectures_of, model_device, pretrained_source, read_config_dict
from medprobe.models.hf.prompting import DEFAULT_QUESTION, render_prompt
from medprobe.models.hf.roles import token_roles
from medprobe.layermap import LayerGroup
from medprobe.runtime import resolve_device

from .listing import available_variants, listing_file, load_listing

VISION_LAYERS = (
    "model.vision_encoder.encoder.layers",  # HF-format hub checkpoints
    "model.vision_encoder.vision_encoder.encoder.layers",  # original GitHub `hulumed` package
)
PROJECTOR = ("model.mm_projector",)
LLM_LAYERS = ("model.layers",)

DEFAULT_IMAGE_SIZE = 448
LOAD_OPTIONS = ("image_size", "attn_implementation", "max_memory")
#: the image placeholder of the Hulu-Med processor (an added tokenizer token)
IMAGE_TOKEN = "<image>"

REMOTE_CODE_REFUSAL = "Hulu-Med ships its model code on the hub; pass --trust-remote-code to run it"


def variant_of(card: ModelCard) -> str:
    """The listing variant of a card: ``"7b"`` from ``ZJU-AI4H/Hulu-Med-7B`` (or the card id)."""
    for text in (card.hub_id or "", card.id):
        match = re.search(r"hulu-?med-(\d+(?:\.\d+)?)b", text, flags=re.IGNORECASE)
        if match:
            variant = f"{match.group(1)}b"
            if variant in available_variants():
                return variant
    raise AdapterError(
        f"card '{card.id}': cannot tell the Hulu-Med size from hub_id '{card.hub_id}'; "
        f"recorded listings exist for {available_variants()}"
    )


class HuluMedAdapter(ModelAdapter):
    family = "hulumed"
    loaders = ("remote-code",)
    names_ad_hoc_models = True
    needs_remote_code = True

    # -- model names ---------------------------------------------------------------------------
    def matches_checkpoint(self, config: Mapping[str, Any]) -> bool:
        """A Hulu-Med checkpoint: ``model_type`` ``hulumed_*`` or a ``Hulumed*`` architecture."""
        return str(config.get("model_type", "")).startswith("hulumed_") or any(
            a.startswith("Hulumed") for a in architectures_of(config)
        )

    def card_for_name(self, name: str) -> ModelCard:
        """``hulumed:DIR`` or ``hulumed:ORG/NAME`` (the size is read from the name, as for cards)."""
        def settings(arch: str, config: Mapping[str, Any]) -> dict[str, Any]:
            llm = config.get("llm_model_type")
            return {"llm_model_type": llm} if llm else {}

        architectures = ("HulumedQwen2ForCausalLM", "HulumedQwen3ForCausalLM")
        return adhoc_card(self.family, name, kind="mllm", architectures=architectures, matches=self.matches_checkpoint,
                          settings=settings, loader="remote-code")

    # -- layer map -----------------------------------------------------------------------------
    def layer_groups(self, card: ModelCard, config: Any) -> Sequence[LayerGroup]:
        return (
            LayerGroup(
                "vision", "vision.{i:02d}", VISION_LAYERS, count="vision_encoder_config.num_hidden_layers",
                layout="packed", width="vision_encoder_config.hidden_size", feeds_connector=-1,
            ),
            LayerGroup("connector", "connector", PROJECTOR, repeated=False, layout="packed", width="hidden_size"),
            LayerGroup("llm", "llm.{i:02d}", LLM_LAYERS, count="num_hidden_layers", layout="NLC", width="hidden_size"),
        )

    def recorded_listing(self, card: ModelCard) -> tuple[Sequence[str], Mapping[str, Any], str]:
        listing = load_listing(listing_file(variant_of(card)))
        wanted = card.setting("llm_model_type")
        recorded = listing.config.get("llm_model_type")
        if wanted is not None and wanted != recorded:
            raise AdapterError(
                f"card '{card.id}': llm_model_type '{wanted}' differs from the recorded listing "
                f"{listing.path} ('{recorded}')"
            )
        return listing.modules, listing.config, listing.describe()

    # -- tiny models ---------------------------------------------------------------------------
    def build_tiny(self, card: ModelCard, seed: int = 0) -> LoadedModel:
        raise AdapterError(
            f"card '{card.id}': Hulu-Med's model classes are remote code on the hub, not part of transformers, so "
            "no tiny random model can be built offline; its layer map is validated against the module listing "
            "recorded from the published code instead"
        )

    def save_tiny_checkpoint(self, card: ModelCard, directory: Any, seed: int = 0) -> Any:
        return self.build_tiny(card, seed)

    # -- real weights --------------------------------------------------------------------------
    def load(
        self,
        card: ModelCard,
        source: str | None = None,
        *,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        device_map: str | None = None,
        trust_remote_code: bool = False,
        random_init: bool = False,
        seed: int = 0,
        **options: Any,
    ) -> LoadedModel:
        """The checkpoint through its remote code (``trust_remote_code`` required). ``random_init``:
        the random-weights twin, built from the checkpoint's config by the same remote classes with
        weights seeded by ``seed`` (the checkpoint's weights are never read)."""
        if not trust_remote_code:
            raise AdapterError(f"{REMOTE_CODE_REFUSAL} (card '{card.id}')")
        unknown = sorted(set(options) - set(LOAD_OPTIONS))
        if unknown:
            raise AdapterError(f"family 'hulumed': unknown load option(s) {unknown}; accepted: {list(LOAD_OPTIONS)}")
        import transformers

        device = resolve_device(device)
        src = pretrained_source(card, source, revision=revision, dtype=dtype, device=device, trust_remote_code=True)
        raw = read_config_dict(src)
        model_type = str(raw.get("model_type", ""))
        if not model_type.startswith("hulumed_"):
            raise AdapterError(
                f"config.json of {src.weights}: model_type '{model_type}' is not a Hulu-Med checkpoint (expects hulumed_*)"
            )
        extra_kwargs = {}
        if options.get("attn_implementation"):
            extra_kwargs["attn_implementation"] = options["attn_implementation"]
        if options.get("max_memory"):
            extra_kwargs["max_memory"] = options["max_memory"]
        weights, redrawn = src.weights, []
        try:
            if random_init:
                from medprobe.models.condition import build_random, random_init_label
                from medprobe.runtime import torch_dtype

                if device_map not in (None, "", "none"):
                    raise AdapterError(f"card '{card.id}': --random-init builds the model on one device; drop --device-map")
                config = transformers.AutoConfig.from_pretrained(src.location, **src.processor_kwargs())
                model, redrawn = build_random(
                    None, config, seed=seed, dtype=torch_dtype(src.dtype_name), device=device,
                    make=lambda cfg, dt: transformers.AutoModelForCausalLM.from_config(cfg, dtype=dt, trust_remote_code=True),
                )
                weights = random_init_label(seed, src.weights)
            else:
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    src.location, **src.model_kwargs(device_map, **extra_kwargs)
                )
            processor = transformers.AutoProcessor.from_pretrained(src.location, **src.processor_kwargs())
        except (OSError, ValueError) as exc:
            raise AdapterError(f"card '{card.id}': cannot load Hulu-Med from {src.weights}: {exc}") from exc
        if device_map is None:
            model = model.to(device)
        model = model.eval()
        # token compression asserts batch size 1; it never drops image tokens, only static video patches
        model.config.use_token_compression = False
        image_token_id = getattr(model.config, "image_token_index", None)
        if not isinstance(image_token_id, int) or image_token_id < 0:
            raise AdapterError(f"config.json of {src.weights}: image_token_index {image_token_id!r} is not a token id")
        layer_map = self.layer_map(
            card, model, model.config, resolved_against=f"module tree of {type(model).__name__} loaded from {weights}"
        )
        side = int(options.get("image_size") or card.setting("image_size") or DEFAULT_IMAGE_SIZE)
        return LoadedModel(
            adapter=self,
            card=card,
            model=model,
            layer_map=layer_map,
            processor=processor,
            config=model.config,
            weights=weights,
            device=model_device(model),
            dtype=src.dtype_name,
            extra={"image_token_id": image_token_id, "image_size": side,
                   **({"random_init_redrawn": redrawn} if redrawn else {})},
        )

    # -- inputs and forward --------------------------------------------------------------------
    def preprocess(self, loaded: LoadedModel, images: Sequence[Any], prompt: str | None = None) -> Batch:
        """B images -> right-padded ``input_ids`` / ``attention_mask`` (B, T), packed
        ``pixel_values`` (sum patches, 3*14*14), ``grid_sizes`` (B, 3), ``merge_sizes`` (B,),
        ``modals`` (B strings); roles from ``config.image_token_index``."""
        images = list(images)
        if not images:
            raise AdapterError(f"model '{loaded.card.id}': preprocess needs at least one image")
        side = loaded.extra["image_size"]
        question = prompt if prompt else DEFAULT_QUESTION
        template_text = render_prompt(loaded.card, None, question, IMAGE_TOKEN) if loaded.card.prompt_template else None
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        rows, pixels, grids, merges, modals = [], [], [], [], []
        for i, image in enumerate(images):
            if not hasattr(image, "convert"):
                raise AdapterError(f"image {i} is a {type(image).__name__}, expected a PIL image")
            named = [("image", image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC))]
            if template_text is not None:  # the card's full prompt; the processor expands <image>
                out = loaded.processor(text=template_text, images=named, return_tensors="pt")
            else:  # the checkpoint's chat template: one user turn, image then question
                out = loaded.processor(
                    images=named, conversation=conversation, add_system_prompt=False, add_generation_prompt=True,
                    return_tensors="pt",
                )
            rows.append(out["input_ids"][0])
            pixels.append(out["pixel_values"])
            grids.append(out["grid_sizes"])
            merges.append(out["merge_sizes"])
            modals.extend(out.get("modals") or ["image"])
        tok = loaded.processor.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), int(pad_id), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids[b, : len(row)] = row
            attention_mask[b, : len(row)] = 1
        grid_sizes = torch.cat(grids).to(torch.long)
        merge_sizes = torch.cat(merges).to(torch.long)
        roles = token_roles(input_ids, attention_mask, loaded.extra["image_token_id"])
        patches = grid_sizes.prod(dim=1)
        tokens = grid_sizes[:, 0] * (grid_sizes[:, 1] // merge_sizes) * (grid_sizes[:, 2] // merge_sizes)
        param = next(loaded.model.parameters())
        inputs = {
            "input_ids": input_ids.to(param.device),
            "attention_mask": attention_mask.to(param.device),
            "pixel_values": torch.cat(pixels).to(param.device, dtype=param.dtype),
            "grid_sizes": grid_sizes.to(param.device),
            "merge_sizes": merge_sizes.to(param.device),
            "modals": modals,
        }
        return Batch(
            inputs=inputs,
            roles=roles,
            packed={"vision": [int(n) for n in patches.tolist()], "connector": [int(n) for n in tokens.tolist()]},
            size=len(rows),
        )

    def forward(self, loaded: LoadedModel, batch: Batch) -> None:
        """Vision encoder + projector through the model's own multimodal merge, then the base LLM."""
        model = loaded.model
        inputs = batch.inputs
        with torch.inference_mode():
            _, attention_mask, position_ids, _, inputs_embeds, _ = model.prepare_inputs_labels_for_multimodal(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                pixel_values=inputs["pixel_values"],
                grid_sizes=inputs["grid_sizes"],
                merge_sizes=inputs["merge_sizes"],
                modals=inputs["modals"],
            )
            model.model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
