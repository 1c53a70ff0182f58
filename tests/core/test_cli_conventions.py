"""What a new user meets on the command line (issue 15, items 1-7): --skip-bad everywhere a dataset
is read, one spelling per concept (old ones kept with a note), what was reused / resumed, one store
root, typo suggestions, names checked before loading, too-small splits refused, help on every option."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from medprobe.cli import INTERRUPTED, cli, did_you_mean, main
from medprobe.commands.options import dataset_spec

MODEL = "example-cnn"
DATA = "synthetic:lesions?n=40&size=32"
DATASET_COMMANDS = ("extract", "classify", "compare", "train", "zeroshot", "finetune", "datasets show")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def _entry(ctx: click.Context) -> None:
    """``medprobe ARGS`` as the console script runs it (errors printed, exit status 2)."""
    main(list(ctx.args))


def invoke(args, env=None):
    return CliRunner().invoke(_entry, args, env=env)


def _command(path: str) -> click.Command:
    ctx = click.Context(cli)
    cmd: click.Command = cli
    for name in path.split():
        cmd = cmd.get_command(ctx, name)  # type: ignore[union-attr]
    return cmd


def _options(path: str) -> dict[str, click.Option]:
    return {o: p for p in _command(path).params if isinstance(p, click.Option) for o in p.opts}


def _bad_folder(tmp_path: Path) -> Path:
    """An image folder with one undecodable file per class beside readable ones."""
    root = tmp_path / "folder"
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (16, 16), (i * 20, 40 if cls == "benign" else 200, 90)).save(root / cls / f"{i}.png")
        (root / cls / "broken.png").write_bytes(b"not a png at all")
    return root


# -- 1. --skip-bad ---------------------------------------------------------------------------


def test_skip_bad_is_offered_everywhere_a_dataset_is_read():
    for path in DATASET_COMMANDS:
        assert "--skip-bad" in _options(path), path
    assert dataset_spec("busi:/d", skip_bad=True) == "busi:/d?skip_bad=1"
    assert dataset_spec("synthetic:lesions?n=40", skip_bad=True, limit=8) == "synthetic:lesions?n=40&skip_bad=1&limit=8"
    assert dataset_spec("busi:/d?skip_bad=0", skip_bad=True) == "busi:/d?skip_bad=0"  # the spec says otherwise


def test_extract_skip_bad_skips_prints_the_count_and_records_it(tmp_path):
    spec = f"imagefolder:{_bad_folder(tmp_path)}"
    refused = invoke(["extract", "-m", MODEL, "-d", spec, "--tiny", "--store", str(tmp_path / "runs")])
    assert refused.exit_code == 2 and "--skip-bad" in refused.output and "broken.png" in refused.output
    ok = invoke(["extract", "-m", MODEL, "-d", spec, "--tiny", "--store", str(tmp_path / "runs"), "--skip-bad", "--json"])
    assert ok.exit_code == 0, ok.output
    assert "skipped 2 bad sample(s) (--skip-bad)" in ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["skipped"] == 2 and summary["rows"] == 20


# -- 2. one spelling per concept -------------------------------------------------------------


def test_one_spelling_per_concept():
    for path in ("train", "zeroshot", "finetune", "extract", "classify", "compare", "datasets show"):
        assert "--limit" in _options(path), path
    for path in ("report", "compare", "demo", "extract", "classify", "probe", "train", "zeroshot", "finetune"):
        assert "--json" in _options(path), path
    for path in ("extract", "classify", "probe", "train", "finetune"):
        assert "--force" in _options(path), path
    for path in ("extract", "classify", "cache ls", "compare", "demo"):
        assert "--store" in _options(path), path
    # one default for how an MLLM answers for P_final
    assert _options("classify")["--mode"].default == _options("compare")["--classify"].default == "generate"
    # --probe takes the comma list docs/api.md shows
    assert _options("report")["--probe"].callback is not None
    # a concept never has two meanings: --rank is the process rank; the LoRA rank is --lora-rank
    assert "--lora-rank" in _options("finetune") and _options("finetune")["--rank"].hidden


def test_old_spellings_still_work_with_a_deprecation_note(tmp_path):
    old = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--out", str(tmp_path), "--limit", "8", "--json"])
    assert old.exit_code == 0, old.output
    assert "'--out' is deprecated" in old.stderr and "use '--store'" in old.stderr
    run = Path(json.loads(old.stdout)["run"])
    assert run.parent == tmp_path
    again = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--limit", "8",
                    "--no-resume", "--json"])  # fmt: skip
    assert again.exit_code == 0 and "'--no-resume' is deprecated" in again.stderr and "use '--force'" in again.stderr
    assert json.loads(again.stdout)["outcome"]["status"] == "new"  # --no-resume meant: start over
    listed = invoke(["cache", "ls", "--root", str(tmp_path), "--json"])
    assert listed.exit_code == 0 and "'--root' is deprecated" in listed.stderr
    assert [r["run"] for r in json.loads(listed.stdout)] == [run.name]


def test_probe_accepts_a_comma_list_and_suggests_close_names(tmp_path):
    bad = invoke(["probe", str(tmp_path), "--probe", "liner"])
    assert bad.exit_code == 2 and "unknown probe 'liner'. Did you mean 'linear'?" in bad.output
    from medprobe.commands.options import check_probes

    assert check_probes(None, None, "linear, mlp") == "linear,mlp"


# -- 3. reuse and resume are said; Ctrl-C says how to go on ----------------------------------


def test_rerun_says_reused_and_a_killed_run_says_resumed_at_row(tmp_path):
    args = ["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--batch-size", "2"]
    first = invoke(args)
    assert first.exit_code == 0 and "extracted 40 rows (new run)" in first.output
    second = invoke(args)
    assert second.exit_code == 0 and second.output.startswith("reused: a finished run with the same key")
    # an interrupted run of the same settings (the engine stopped after batch 12: one shard on disk)
    from medprobe.features.extract import extract

    def interrupt(batch_no):
        if batch_no == 12:
            raise KeyboardInterrupt

    other = tmp_path / "other"
    args = ["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(other), "--batch-size", "2", "--device", "cpu"]
    with pytest.raises(KeyboardInterrupt):
        extract(MODEL, DATA, other, tiny=True, batch_size=2, device="cpu", progress=False, on_batch=interrupt)
    resumed = invoke(args)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed at row 16 of 40" in resumed.output


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path):
    code = ("import sys; from medprobe.cli import main; "
            f"main(['demo', '--out', {str(tmp_path / 'demo')!r}])")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    assert proc.stdout.readline().startswith("demo:")  # inside the command: imports done
    time.sleep(2)  # models loading or extracting
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert INTERRUPTED in err and "run the same command again to resume" in err
    assert "Traceback" not in err


# -- 4. one store root -----------------------------------------------------------------------


@pytest.mark.slow
def test_medprobe_cache_dir_is_the_store_of_extract_classify_and_cache(tmp_path):
    store = tmp_path / "store"
    env = {"MEDPROBE_CACHE_DIR": str(store)}
    out = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--limit", "8", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert Path(json.loads(out.stdout)["run"]).parent == store
    cls = invoke(["classify", "-m", "medgemma-4b", "-d", DATA, "--tiny", "--limit", "8", "--mode", "score", "--json"],
                 env=env)  # fmt: skip
    assert cls.exit_code == 0, cls.output
    assert Path(json.loads(cls.stdout)["run"]).parent == store
    listed = invoke(["cache", "ls", "--json"], env=env)
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) >= 1
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "MEDPROBE_CACHE_DIR" in readme and "HF_HOME" in readme


# -- 5. typos ----------------------------------------------------------------------------------


def test_mistyped_subcommands_get_suggestions():
    out = invoke(["modles"])
    assert out.exit_code == 2 and "No such command 'modles'. Did you mean 'models'?" in out.output
    assert did_you_mean("extarct", ["extract", "classify"]) == " Did you mean 'extract'?"
    assert did_you_mean("zzz", ["extract"]) == ""


@pytest.mark.slow
def test_readout_and_layer_typos_are_refused_before_any_model_is_loaded(tmp_path):
    code = ("import sys; from medprobe.cli import main; "
            "main(['extract', '-m', 'resnet50', '-d', 'synthetic:lesions', '--tiny', '--readout', 'image-maen'])")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown readout 'image-maen'. Did you mean 'image-mean'?" in proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    # refused while parsing: no model library imported (torch included), no model built
    assert not imported & {"torch", "timm", "transformers", "open_clip", "medprobe.models.zoo",
                           "medprobe.features.extract"}, imported
    # a misspelt layer name is refused while parsing too: not even torch is imported
    code = code.replace("'--readout', 'image-maen'", "'--layers', 'vision.*,stgae.*'")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith(
        "Error: --layers: pattern 'stgae.*' matches no layer id of any model. Did you mean 'stage.*'?"), errors
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "timm", "transformers", "medprobe.models.zoo", "medprobe.features.extract"}, imported
    layers = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--layers", "stage.*,"])
    assert layers.exit_code == 2 and "empty pattern" in layers.output
    for command in (["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--layers", "stgae.*"],
                    ["train", "-m", MODEL, "-d", DATA, "--tiny", "--out", str(tmp_path / "t"), "--probe-layers",
                     "--layers", "stgae.*"],
                    ["models", "layers", MODEL, "--tiny", "--select", "stgae.*"]):  # fmt: skip
        typo = invoke(command)
        assert typo.exit_code == 2, command
        flag = "--select" if "--select" in command else "--layers"
        assert f"{flag}: pattern 'stgae.*' matches no layer id of any model. Did you mean 'stage.*'" in typo.output
        assert "is invalid" not in typo.output and not any(tmp_path.iterdir())  # nothing written
    # well formed but past this model's depth: refused once its map is known, still before anything is written
    deep = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--layers", "stage.9"])
    assert deep.exit_code == 2
    assert "--layers: pattern 'stage.9' matches none of the layers of 'example-cnn'. Did you mean" in deep.output
    assert "Its layers: stage.0, stage.1, stage.2, head" in deep.output and not any(tmp_path.iterdir())


# -- 6. too-small splits ---------------------------------------------------------------------


def test_extract_refuses_a_limit_that_leaves_a_split_unprobeable(tmp_path):
    out = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--limit", "1"])
    assert out.exit_code == 2
    assert "--limit 1 leaves 1 class(es)" in out.output and "or more" in out.output
    assert not any(tmp_path.iterdir())  # refused before loading the model: nothing written
    small = invoke(["extract", "-m", MODEL, "-d", DATA, "--tiny", "--store", str(tmp_path), "--limit", "6"])
    assert small.exit_code == 0 and "needs 5 per class" in small.stderr and "--protocol split" in small.stderr


# -- 7. help -----------------------------------------------------------------------------------


def test_every_option_has_help_and_the_command_list_is_not_truncated():
    ctx = click.Context(cli)
    missing = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + [name])
            return
        missing.extend(f"{' '.join(path)} {p.opts[0]}" for p in cmd.params
                       if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip())  # fmt: skip

    walk(cli, [])
    assert missing == []
    text = invoke(["--help"], env={"COLUMNS": "80"}).output
    commands = text.split("Commands:")[1]
    assert "..." not in commands
    for name in cli.list_commands(ctx):
        first = cli.get_command(ctx, name).get_short_help_str(limit=500)
        assert " ".join(first.split()) in " ".join(commands.split()), name
