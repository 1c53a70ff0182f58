"""GPU check of the extraction path at real width (never part of CI; run by hand on a CUDA machine).

One short script, under 5 minutes on one GPU:

1. builds a **full-width, truncated** LLaVA-1.5-7B-class model (CLIP ViT-L/14 at 336 px: 1024 wide,
   576 patch tokens; Llama 4096 wide, 32 heads, 11008 MLP; only ``--vision-layers`` vision blocks
   and ``--llm-layers`` LLM layers, random weights, seeded) and saves it in bf16 as a local
   checkpoint directory with an in-process tokenizer and a LlavaProcessor;
2. extracts every layer of it over a synthetic dataset in bf16 on ``cuda`` through the ordinary
   local-directory path (``medprobe extract --model DIR``), printing throughput (images/s) and
   peak GPU memory;
3. probes that run on ``cuda`` (linear probes, all layers batched) and prints the time;
4. runs the same extraction as a two-process data-parallel job (``--world-size 2 --rank 0/1``,
   both processes on the visible GPUs) and checks every feature file bit-identical to the
   one-process run.

Usage::

    python benchmarks/gpu_check.py                    # defaults: 2 vision blocks, 2 LLM layers, 64 images
    python benchmarks/gpu_check.py --n 128 --batch-size 16 --llm-layers 4

Without CUDA it builds the model on the ``meta`` device (checking the construction and the layer
map, no memory) and exits with status 2 and a message saying the GPU parts were not run. The weights are random and
the data synthetic: the figures are throughput and memory, never findings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: LLaVA-1.5-7B widths (CLIP ViT-L/14-336 + Vicuna-7B / Llama-2-7B)
VISION = dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
              projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
TEXT = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
            max_position_embeddings=4096, rms_norm_eps=1e-5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision-layers", type=int, default=2, help="vision blocks kept (>= 2: the connector reads block -2)")
    p.add_argument("--llm-layers", type=int, default=2, help="LLM layers kept")
    p.add_argument("--n", type=int, default=64, help="images in the synthetic dataset")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--work", default=None, help="folder for the checkpoint and runs (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.vision_layers < 2:
        p.error("--vision-layers must be >= 2 (LLaVA feeds the projector from block -2)")
    if args.llm_layers < 1 or args.n < 2 or args.batch_size < 1:
        p.error("--llm-layers >= 1, --n >= 2 and --batch-size >= 1 are required")
    return args


def build_checkpoint(out: Path | None, args: argparse.Namespace, device: str) -> dict:
    """Build the truncated full-width model on ``device`` (``meta``: no memory, no weights) and,
    with ``out``, save it (bf16 unless --dtype says otherwise) there; returns facts about it
    (parameters, layer ids, widths)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from medprobe.models.hf.tokenizer import build_word_tokenizer
    from medprobe.models.zoo import get_adapter, get_card
    from medprobe.runtime import torch_dtype

    template = (
        "{% for message in messages %}{{ message['role'] | upper }}: {% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %} {% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    tok = build_word_tokenizer(named_tokens={"image_token": "<image>"}, add_bos=True, chat_template=template)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(num_hidden_layers=args.vision_layers, **VISION),
        text_config=LlamaConfig(vocab_size=len(tok), num_hidden_layers=args.llm_layers, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **TEXT),
        image_token_index=tok.image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=(VISION["image_size"] // VISION["patch_size"]) ** 2,
    )
    dtype = torch_dtype({"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[args.dtype])
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype).eval()
    card = get_card("llava-1.5-7b")
    lmap = get_adapter("llava").layer_map(card, model, config, resolved_against="gpu_check model")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=template,
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    facts = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": lmap.ids,
        "widths": {s.id: s.width for s in lmap},
        "dtype": str(dtype).replace("torch.", ""),
    }
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return facts


def _extract_cli(ckpt: Path, dataset: str, out: Path, args: argparse.Namespace, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from medprobe.cli import main; main(sys.argv[1:])", "extract",
           "--model", str(ckpt), "--dataset", dataset, "--out", str(out), "--dtype", args.dtype,
           "--batch-size", str(args.batch_size), "--json", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="medprobe-gpu-check-"))
    cuda = torch.cuda.is_available()
    started = time.perf_counter()
    facts = build_checkpoint(work / "ckpt" if cuda else None, args, "cuda" if cuda else "meta")
    print(f"model: truncated full-width LLaVA-1.5-7B class, {facts['parameters'] / 1e6:.1f}M parameters ({facts['dtype']}), "
          f"layers {facts['layers']}")
    print("widths: " + ", ".join(f"{k}={v}" for k, v in facts["widths"].items()))
    if not cuda:
        print("CUDA is not available: the model was built on the meta device and its layer map resolved; the GPU parts "
              "(bf16 extraction, probes on cuda, two-process data-parallel check, throughput, peak memory) were NOT run.",
              file=sys.stderr)
        return 2

    import numpy as np

    import medprobe as mp

    dataset = f"synthetic:lesions?n={args.n}&size=336&seed={args.seed}"
    # 1. one process, in this process (so peak memory is measured here)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = mp.extract(str(work / "ckpt"), dataset, work / "single", device="cuda", dtype=args.dtype,
                     batch_size=args.batch_size, progress=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"extract (1 process, {torch.cuda.get_device_name(0)}): {args.n} images in {seconds:.1f} s = "
          f"{args.n / seconds:.1f} images/s (includes the model load), peak GPU memory {peak:.2f} GiB, "
          f"{len(run.feature_keys)} (layer, readout) feature sets")
    # 2. probes on cuda
    t0 = time.perf_counter()
    results = mp.probe(run, "linear", device="cuda", force=True)
    torch.cuda.synchronize()
    layer_results = list(results["linear"].layers.values())
    best = max(layer_results, key=lambda r: r.metrics.get("accuracy") or 0.0)
    print(f"probe (linear, cuda): {len(layer_results)} layer probes in {time.perf_counter() - t0:.1f} s; "
          f"best {best.key} accuracy {best.metrics.get('accuracy'):.3f} (synthetic data, random weights)")
    # 3. two processes, data-parallel, compared bit for bit
    t0 = time.perf_counter()
    env_extra = ["--world-size", "2", "--device", "auto"]
    procs = [_extract_cli(work / "ckpt", dataset, work / "dp", args, [*env_extra, "--rank", str(r)]) for r in (0, 1)]
    outs = [p.communicate() for p in procs]
    for r, (p, (so, se)) in enumerate(zip(procs, outs)):
        if p.returncode != 0:
            print(f"rank {r} failed ({p.returncode}):\n{se[-2000:]}", file=sys.stderr)
            return 1
    seconds = time.perf_counter() - t0
    (dp_dir,) = [d for d in (work / "dp").iterdir() if d.is_dir()]
    dp = mp.open_run(dp_dir)
    mismatched = []
    for layer, readout in run.feature_keys:
        if not np.array_equal(np.asarray(run.features(layer, readout)), np.asarray(dp.features(layer, readout))):
            mismatched.append(f"{layer}/{readout}")
    same_ids = dp.sample_ids == run.sample_ids
    print(f"data-parallel (2 processes on {torch.cuda.device_count()} GPU(s)): {seconds:.1f} s wall for both ranks "
          f"(each loads the model); bit-identical to 1 process: {not mismatched and same_ids}"
          + (f"; differing: {mismatched}" if mismatched else ""))
    print(json.dumps({"work": str(work), "total_s": round(time.perf_counter() - started, 1)}))
    return 0 if not mismatched and same_ids else 1


if __name__ == "__main__":
    sys.exit(main())
