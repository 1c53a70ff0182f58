"""``medprobe convert``: rewrite checkpoints into the layout medprobe's adapters load.

``medprobe convert llava-original SRC DST`` turns an original LLaVA-code checkpoint (LLaVA-Med
v1.5, HuatuoGPT-Vision-7B/34B original) into a stock llava-hf checkpoint;
``medprobe convert to-llava-original SRC DST`` writes a llava-hf checkpoint in the original
layout (the reverse mapping, e.g. to check a conversion round trip). Rules: :mod:`medprobe_llava.convert`.
"""

from __future__ import annotations

import click


@click.group()
def convert() -> None:
    """Convert checkpoints between layouts (no downloads; local directories only)."""


@convert.command("llava-original")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option(
    "--vision-tower", default=None, type=click.Path(exists=True, file_okay=False),
    help="Local CLIP checkpoint directory: the tower's config, and its weights when SRC carries none.",
)
@click.option("--dtype", default="keep", show_default=True, type=click.Choice(["keep", "fp32", "bf16", "fp16"]),
              help="Cast floating tensors; 'keep' stores them as in SRC.")
@click.option("--overwrite", is_flag=True, help="Replace DST when it holds an earlier conversion.")
@click.option("--json", "as_json", is_flag=True, help="Print the conversion record as JSON.")
def llava_original(src, dst, vision_tower, dtype, overwrite, as_json):
    """Convert the original LLaVA-code checkpoint SRC (model_type llava_mistral / llava_qwen2 /
    llava_llama) into a stock LlavaForConditionalGeneration checkpoint DST (config, safetensors,
    LlavaProcessor). Load DST with --source DST."""
    from .convert import convert_llava_original
    from medprobe.commands.output import echo_json

    result = convert_llava_original(
        src, dst, vision_tower=vision_tower, dtype=None if dtype == "keep" else dtype, overwrite=overwrite
    )
    record = result.record
    if as_json:
        echo_json({"path": str(result.path), **record})
        return
    click.echo(f"wrote {result.path} (LlavaForConditionalGeneration, text {record['text_model_type']}, {record['dtype']})")
    click.echo(f"{record['tensors_mapped']} tensors mapped from {', '.join(record['source_weight_files'])}")
    added = [f"{t['token']}={t['id']}" for t in record["tokens"] if t["added"]]
    click.echo(
        f"image_token_index {record['image_token_index']}, image_seq_length {record['image_seq_length']}, "
        f"vision_feature_layer {record['vision_feature_layer']}, strategy {record['vision_feature_select_strategy']}"
    )
    if added:
        rows = record["vocab_rows"]
        click.echo(f"added tokens {', '.join(added)}; vocabulary rows {rows['before']} -> {rows['after']} (new rows: mean)")
    if record["dropped_buffers"]:
        click.echo(f"dropped {len(record['dropped_buffers'])} recomputed buffer(s)")
    if record["dropped_config_fields"]:
        click.echo(f"config fields not carried: {', '.join(record['dropped_config_fields'])}")


@convert.command("to-llava-original")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--max-shard-mb", default=None, type=float, help="Split the weights into shards of at most this size.")
@click.option("--overwrite", is_flag=True, help="Replace DST when it holds an earlier conversion.")
def to_llava_original(src, dst, max_shard_mb, overwrite):
    """Write the llava-hf checkpoint SRC in the original LLaVA-code layout DST (reverse mapping)."""
    from .convert import llava_hf_to_original

    max_bytes = None if max_shard_mb is None else max(1, int(max_shard_mb * 1024 * 1024))
    out = llava_hf_to_original(src, dst, max_shard_bytes=max_bytes, overwrite=overwrite)
    click.echo(f"wrote {out} (original LLaVA-code layout)")
