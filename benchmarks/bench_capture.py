"""Capture benchmark on a mid-size random LLaVA-class model (CLIP 12 x 256 at 336 px + Llama 12 x 512).

Measures, side by side in one run (ratios, not absolute times, are the result):

1. capture of every layer with two readouts vs the bare backbone forward (target <= 1.05x time);
2. bytes retained by the hooks vs ``output_hidden_states=True`` + pooling afterwards (target <= 1/50);
3. vision-only capture (stops before the LLM) vs the full forward (target <= 0.5x time);
4. extraction throughput (images/s) and peak RSS at batch 1 / 8 / 32 (each batch size in a fresh
   subprocess so peak RSS is its own).

Usage::

    python benchmarks/bench_capture.py            # full
    python benchmarks/bench_capture.py --quick    # fewer repeats, batch sizes 1/8

Timings interleave the variants (A B C A B C ...) and report medians, so machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def build(batch: int, seed: int = 0):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from medprobe.adapter import Batch
    from medprobe.models.zoo import get_adapter, get_card

    torch.manual_seed(seed)
    image_token = 31999
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=256, intermediate_size=1024,
                                       num_hidden_layers=12, num_attention_heads=4),
        text_config=LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=12,
                                num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=1024),
        image_token_index=image_token, vision_feature_layer=-2, vision_feature_select_strategy="default",
        image_seq_length=576,
    )
    model = LlavaForConditionalGeneration(config).eval()
    card = get_card("llava-1.5-7b")
    adapter = get_adapter("llava")
    lmap = adapter.layer_map(card, model, config, resolved_against="benchmark LLaVA")
    text = torch.randint(2, 31000, (batch, 12))
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), torch.full((batch, 576), image_token), text], dim=1)
    image = ids == image_token
    last = torch.zeros_like(image)
    last[:, -1] = True
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(batch, 3, 336, 336)}
    b = Batch(inputs=inputs, roles={"image": image, "text": ~image, "last": last}, size=batch)
    return model, lmap, b


def forward(model, batch, **kw):
    return model.model(**batch.inputs, use_cache=False, **kw)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ratios(repeats: int, batch_size: int) -> dict:
    from medprobe.features.capture import Capture

    model, lmap, batch = build(batch_size)
    every = list(lmap)
    vision = lmap.select("vision.*")
    readouts = ("image-mean", "last-token")
    with torch.inference_mode():
        forward(model, batch)  # warm-up
    bare, full, vis = [], [], []
    for _ in range(repeats):
        with torch.inference_mode():
            bare.append(timed(lambda: forward(model, batch)))
        with Capture(model, every, readouts, model_name="bench") as cap:
            full.append(timed(lambda: cap.run(batch, lambda: forward(model, batch))))
        with Capture(model, vision, readouts, model_name="bench") as cap:
            vis.append(timed(lambda: cap.run(batch, lambda: forward(model, batch))))
    with Capture(model, every, readouts, model_name="bench") as cap:
        feats = cap.run(batch, lambda: forward(model, batch))
    hook_bytes = sum(v.numel() * v.element_size() for v in feats.values())
    with torch.inference_mode():
        out = forward(model, batch, output_hidden_states=True)
    hs_bytes = sum(t.numel() * t.element_size() for t in out.hidden_states)
    vis_hs = out.image_outputs.hidden_states if getattr(out, "image_outputs", None) is not None else ()
    hs_bytes += sum(t.numel() * t.element_size() for t in vis_hs)
    return {
        "batch": batch_size,
        "repeats": repeats,
        "bare_median_s": statistics.median(bare),
        "capture_all_median_s": statistics.median(full),
        "vision_only_median_s": statistics.median(vis),
        "capture_vs_bare": statistics.median(full) / statistics.median(bare),
        "vision_only_vs_full": statistics.median(vis) / statistics.median(bare),
        "hook_retained_bytes": hook_bytes,
        "hidden_states_retained_bytes": hs_bytes,
        "retained_ratio": hook_bytes / hs_bytes,
        "layers": len(every),
    }


def throughput(batch_size: int, repeats: int) -> dict:
    """Run in a fresh process: images/s of capture (all layers, two readouts) and peak RSS."""
    from medprobe.features.capture import Capture

    model, lmap, batch = build(batch_size)
    with Capture(model, list(lmap), ("image-mean", "last-token"), model_name="bench") as cap:
        cap.run(batch, lambda: forward(model, batch))  # warm-up
        times = [timed(lambda: cap.run(batch, lambda: forward(model, batch))) for _ in range(repeats)]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"batch": batch_size, "images_per_s": batch_size / statistics.median(times), "peak_rss_mib": peak_kib / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child-throughput", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    if args.child_throughput:
        print(json.dumps(throughput(args.child_throughput, args.repeats or 2)))
        return
    repeats = args.repeats or (3 if args.quick else 7)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
    r = ratios(repeats, batch_size=4)
    print(json.dumps(r, indent=2))
    print(f"1. capture all {r['layers']} layers x 2 readouts vs bare forward: {r['capture_vs_bare']:.3f}x  (target <= 1.05x)")
    print(f"2. retained bytes, hooks vs output_hidden_states: {r['hook_retained_bytes']} / {r['hidden_states_retained_bytes']}"
          f" = 1/{1 / r['retained_ratio']:.0f}  (target <= 1/50)")
    print(f"3. vision-only vs full forward: {r['vision_only_vs_full']:.3f}x  (target <= 0.5x)")
    sizes = (1, 8) if args.quick else (1, 8, 32)
    print("4. throughput and peak RSS (fresh process per batch size):")
    for bs in sizes:
        out = subprocess.run([sys.executable, __file__, "--child-throughput", str(bs), "--repeats", "2"],
                             capture_output=True, text=True, check=True)
        t = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"   batch {bs:>2}: {t['images_per_s']:.2f} images/s, peak RSS {t['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
