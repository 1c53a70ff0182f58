"""Fault corpus rows 64-66: malformed experiment files and grids whose jobs fail.

Every malformed file is refused by ``grid run --dry-run`` (status 2, one ``Error:`` naming the
file and the key) before anything is planned or written; a grid with a failing job exits 1 and
keeps every finished job's files byte for byte."""

from __future__ import annotations

import pytest

from faultkit import digest

GOOD = """
[experiment]
name = "faults"
out = "grid"
tiny = true
device = "cpu"
dtype = "fp32"
batch_size = 8
readouts = ["image-mean"]
probes = ["linear"]

[probe]
protocol = "split"  # a grid-fault case: the held-out split keeps the 24-image probe quick and valid
controls = false
n_boot = 20
coarse_grid = [1.0]
fine_steps = []
max_iter = 50

[resources]
gpus = 0

[[model]]
ref = "example-cnn"

[[dataset]]
spec = "synthetic:lesions?n=24&size=32"
name = "lesions"
"""

# (name, change to GOOD, the error's text after "Error: <file>: ")
BROKEN = [
    ("t_syntax", ('name = "faults"', 'name = "faults'), "not valid TOML: "),
    ("t_top_key", ("[resources]", "[resource]"), "unknown key(s) ['resource']; known: "),
    ("t_experiment_key", ("tiny = true", "tiny = true\nbatchsize = 8"), "[experiment]: unknown key(s) ['batchsize']; known: "),
    ("t_model_key", ('ref = "example-cnn"', 'ref = "example-cnn"\ngpu = 1'), "[[model]] #1: unknown key(s) ['gpu']; known: "),
    ("t_dataset_key", ('name = "lesions"', 'name = "lesions"\nsplit = "test"'), "[[dataset]] #1: unknown key(s) ['split']; known: "),
    ("t_seed_type", ("tiny = true", 'tiny = true\nseed = "zero"'), "[experiment].seed: expected an integer, got 'zero'"),
    ("t_tiny_type", ("tiny = true", 'tiny = "yes"'), "[experiment].tiny: expected true or false, got 'yes'"),
    ("t_batch_zero", ("batch_size = 8", "batch_size = 0"), "[experiment].batch_size: must be at least 1, got 0"),
    ("t_dtype", ('dtype = "fp32"', 'dtype = "fp64"'), "[experiment].dtype: 'fp64' is not one of ['auto', 'bf16', 'fp16', 'fp32']"),
    ("t_gpus_negative", ("gpus = 0", "gpus = -2"), "[resources].gpus: expected an integer >= 0, got -2"),
    ("t_no_models", ('[[model]]\nref = "example-cnn"', ""), "no models; add at least one [[model]] table with ref = \"card-id\""),
    ("t_executor_key", ("[resources]", "[executor.ray]\naddres = \"auto\"\n\n[resources]"),
     "[executor.ray]: unknown key(s) ['addres']; known: ['address', 'allow_infeasible', 'env_vars', 'num_cpus', 'num_gpus']"),
]


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, change, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_row64_malformed_experiment_files_fail_the_dry_run(tmp_path, medprobe, name, change, message):
    assert change[0] in GOOD or change[0] == ""
    path = _write(tmp_path, name, GOOD.replace(*change))
    result = medprobe("grid", "run", path, "--dry-run")
    assert result.code == 2, result
    assert result.err.startswith(f"Error: {path}: {message}"), result.err
    assert len(result.err.splitlines()) == 1 and result.out == ""
    assert not (tmp_path / "grid").exists()


def test_row65_unknown_probe_key_is_refused_at_parse_time(tmp_path, medprobe):
    path = _write(tmp_path, "t_unknown_key", GOOD.replace("max_iter = 50", "max_iter = 50\nmax_iters = 100"))
    result = medprobe("grid", "run", path, "--dry-run")
    assert result.code == 2
    assert result.err == (
        f"Error: {path}: [probe]: unknown key(s) ['max_iters'] for probe 'linear'; known: ['protocol', 'k', 'seeds', "
        "'n_permutations', 'controls', 'recipe', 'holdout', 'n_boot', 'max_chunk_bytes', 'device'] and the 'linear' "
        "hyper-parameters ['coarse_grid', 'fine_steps', 'max_iter', 'tol', 'history', 'recipe']\n")
    assert not (tmp_path / "grid").exists()
    # a key one probe takes but another does not: the same table goes to both
    both = GOOD.replace('probes = ["linear"]', 'probes = ["linear", "mlp"]').replace("max_iter = 50", "max_iter = 50\nhidden = 16")
    result = medprobe("grid", "run", _write(tmp_path, "t_mixed", both), "--dry-run")
    assert result.code == 2 and "[probe]: unknown key(s) ['hidden'] for probe 'linear'" in result.err
    assert medprobe("grid", "run", _write(tmp_path, "t_ok", GOOD), "--dry-run").code == 0


def test_row66_grid_with_a_failing_job_exits_1_and_keeps_finished_jobs(tmp_path, medprobe):
    text = GOOD + '\n[[dataset]]\nspec = "imagefolder:./no-such-folder"\nname = "baddata"\n'
    path = _write(tmp_path, "t_baddata", text)
    result = medprobe("grid", "run", path)
    assert result.code == 1, result
    assert "ran 2 job(s) with the local executor: 1 done, 1 failed" in result.out
    err = result.err.splitlines()
    assert err[0] == (f"FAILED example-cnn__baddata__base: DatasetLayoutError: imagefolder: "
                      f"'{tmp_path / 'no-such-folder'}' does not exist")
    assert err[1] == f"  log: {tmp_path / 'grid' / 'jobs' / 'example-cnn__baddata__base' / 'job.log'}"
    assert err[2] == ("1 of 2 job(s) failed (exit status 1); fix the cause in the log and run again: done jobs are kept")
    runs = tmp_path / "grid" / "runs"
    before = digest(runs)
    assert before  # the good job wrote its run
    again = medprobe("grid", "run", path)
    assert again.code == 1 and "ran 1 job(s) with the local executor: 0 done, 1 failed" in again.out
    assert digest(runs) == before  # the finished job was neither re-run nor touched
    status = medprobe("grid", "status", path)
    assert "1 done" in status.out and "1 failed" in status.out
