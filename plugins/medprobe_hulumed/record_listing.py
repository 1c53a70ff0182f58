"""Regenerate the packaged Hulu-Med module listings: ``python -m medprobe_hulumed.record_listing``.

What the names reflect (public sources named per item):

* module nesting of the HF-format remote code: ``HulumedQwen{2,3}ForCausalLM`` holds
  ``model = HulumedQwen{2,3}Model`` (a stock ``Qwen{2,3}Model`` whose ``__init__`` then adds
  ``vision_encoder`` and ``mm_projector``) and ``lm_head``. Read in ``modeling_hulumed_qwen2.py``
  and ``modeling_hulumed_encoder.py`` of AdvancingEther/Hulu-Med@829e163 (a copy of the hub
  remote code, MedUniEval/models/HuluMed_Qwen2/hulumed_src) and ZJUI-AI4H/Hulu-Med@a0060ad;
* the vision encoder (``HulumedVisionEncoderModel``): ``embeddings.patch_embedding``,
  ``encoder.rotary_pos_emb``, ``encoder.layers.N`` (``self_attn.{k,v,q,out}_proj``,
  ``layer_norm1``, ``mlp.{activation_fn,fc1,fc2}``, ``layer_norm2``), ``post_layernorm``;
  transcribed from that code, in registration order;
* ``mm_projector`` = ``MlpGeluProjector`` (``mlp2x_gelu``): ``readout`` = [Linear, GELU, Linear];
* the LLM names come from instantiating the stock transformers ``Qwen2Model`` / ``Qwen3Model`` on
  the meta device with the variant's layer count (widths do not change names).

Sizes per variant are in :data:`VARIANTS` with their evidence; the vision encoder's depth/width
(27 x 1152) are expected from the so400m lineage and are UNVERIFIED until a checkpoint's
``config.vision_encoder_config`` is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: per variant: hub id, LLM type, decoder layers x hidden, model_type/class and evidence
VARIANTS: dict[str, dict[str, Any]] = {
    "4b": {
        "hub_id": "ZJU-AI4H/Hulu-Med-4B", "llm": "qwen3", "layers": 36, "hidden": 2560,
        "model_type": "hulumed_qwen3", "architecture": "HulumedQwen3ForCausalLM",
        "evidence": "Qwen3-4B (36 x 2560) per third-party config audits; class from a third-party audit",
        "unverified": ["model_type", "architectures"],
    },
    "7b": {
        "hub_id": "ZJU-AI4H/Hulu-Med-7B", "llm": "qwen2", "layers": 28, "hidden": 3584,
        "model_type": "hulumed_qwen2", "architecture": "HulumedQwen2ForCausalLM",
        "evidence": "Qwen2.5-7B (28 x 3584) per the Hulu-Med README model zoo",
        "unverified": ["model_type", "architectures"],
    },
    "14b": {
        "hub_id": "ZJU-AI4H/Hulu-Med-14B", "llm": "qwen3", "layers": 40, "hidden": 5120,
        "model_type": "hulumed_qwen3", "architecture": "HulumedQwen3ForCausalLM",
        "evidence": "Qwen3-14B (40 x 5120) per the README model zoo; hulumed_qwen3 per the hub card",
        "unverified": [],
    },
    "32b": {
        "hub_id": "ZJU-AI4H/Hulu-Med-32B", "llm": "qwen2", "layers": 64, "hidden": 5120,
        "model_type": "hulumed_qwen2", "architecture": "HulumedQwen2ForCausalLM",
        "evidence": "Qwen2.5-32B (64 x 5120) per the README model zoo and Qwen2.5-32B config.json",
        "unverified": ["model_type", "architectures"],
    },
}

#: SigLIP-so400m-like encoder; every value UNVERIFIED (the config class defaults differ: 768 x 12, patch 16)
VISION_ENCODER = {
    "model_type": "hulumed_vision_encoder",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
}

CODE_REFS = (
    "module nesting of the Hulu-Med HF-format remote code (hub modeling_hulumed_qwen2/qwen3.py + "
    "modeling_hulumed_encoder.py, as mirrored in AdvancingEther/Hulu-Med@829e163 "
    "MedUniEval/models/HuluMed_Qwen2/hulumed_src and ZJUI-AI4H/Hulu-Med@a0060ad src/hulumed/model)"
)


def vision_encoder_names(prefix: str, num_layers: int) -> list[str]:
    """Module names of ``HulumedVisionEncoderModel`` under ``prefix``, in registration order."""
    names = [prefix, f"{prefix}.embeddings", f"{prefix}.embeddings.patch_embedding", f"{prefix}.encoder",
             f"{prefix}.encoder.rotary_pos_emb", f"{prefix}.encoder.layers"]
    for i in range(num_layers):
        block = f"{prefix}.encoder.layers.{i}"
        names += [
            block, f"{block}.self_attn", f"{block}.self_attn.k_proj", f"{block}.self_attn.v_proj",
            f"{block}.self_attn.q_proj", f"{block}.self_attn.out_proj", f"{block}.layer_norm1", f"{block}.mlp",
            f"{block}.mlp.activation_fn", f"{block}.mlp.fc1", f"{block}.mlp.fc2", f"{block}.layer_norm2",
        ]
    names.append(f"{prefix}.post_layernorm")
    return names


def llm_names(llm: str, num_layers: int) -> list[str]:
    """``named_modules()`` of the stock ``Qwen2Model`` / ``Qwen3Model`` with ``num_layers`` layers."""
    import torch
    import transformers

    small = {"vocab_size": 16, "hidden_size": 16, "intermediate_size": 16, "num_attention_heads": 2,
             "num_key_value_heads": 1, "num_hidden_layers": num_layers}
    if llm == "qwen3":
        config, cls = transformers.Qwen3Config(head_dim=8, **small), transformers.Qwen3Model
    elif llm == "qwen2":
        config, cls = transformers.Qwen2Config(**small), transformers.Qwen2Model
    else:
        raise ValueError(f"unknown Hulu-Med LLM type {llm!r}")
    with torch.device("meta"):
        model = cls(config)
    return [n for n, _ in model.named_modules() if n]


def record(variant: str) -> dict[str, Any]:
    """The listing dict of one variant."""
    import transformers

    v = VARIANTS[variant]
    modules = ["model", *(f"model.{n}" for n in llm_names(v["llm"], v["layers"]))]
    modules += vision_encoder_names("model.vision_encoder", VISION_ENCODER["num_hidden_layers"])
    modules += ["model.mm_projector", "model.mm_projector.readout", "model.mm_projector.readout.0",
                "model.mm_projector.readout.1", "model.mm_projector.readout.2", "lm_head"]
    source = (
        f"{CODE_REFS}; LLM names from stock transformers {transformers.__version__} "
        f"{'Qwen3Model' if v['llm'] == 'qwen3' else 'Qwen2Model'} with {v['layers']} layers ({v['evidence']}); "
        f"vision encoder depth {VISION_ENCODER['num_hidden_layers']} and width {VISION_ENCODER['hidden_size']} are "
        "UNVERIFIED (so400m lineage; read config.vision_encoder_config of the checkpoint)."
    )
    config = {
        "model_type": v["model_type"],
        "architectures": [v["architecture"]],
        "llm_model_type": v["llm"],
        "hidden_size": v["hidden"],
        "num_hidden_layers": v["layers"],
        "mm_projector_type": "mlp2x_gelu",
        "image_token_index": None,
        "vision_encoder_config": dict(VISION_ENCODER),
    }
    unverified = [*v["unverified"], "image_token_index",
                  *(f"vision_encoder_config.{k}" for k in VISION_ENCODER if k != "model_type")]
    return {"variant": variant, "hub_id": v["hub_id"], "source": source, "config": config,
            "unverified": unverified, "modules": modules}


def main(out_dir: str | Path | None = None) -> list[Path]:
    """Write ``listing_<variant>.json`` for every variant into ``out_dir`` (default: this package)."""
    folder = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent
    written = []
    for variant in VARIANTS:
        path = folder / f"listing_{variant}.json"
        path.write_text(json.dumps(record(variant), indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    for p in main():
        print(p)
