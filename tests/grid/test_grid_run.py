"""Grids end to end on the tiny offline study: dry-run table, the three executors filling one grid
and one combined report, failures that do not stop the others, interrupt and resume, status."""

from __future__ import annotations

from medprobe.tasks.pipeline import probe_dir
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medprobe.cli import cli
from medprobe.features.extract import extract
from medprobe.grid import expand_jobs, grid_report, grid_status, load_experiment, run_grid
from medprobe.features.store import Run

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny-study.toml"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-grid")


def test_dry_run_prints_the_job_table(tiny_grid):
    code, out = invoke("grid", "run", str(TINY), "--grid", str(tiny_grid), "--dry-run")
    assert code == 0, out
    for job in ("lingshu-7b__lesions__base", "medgemma-4b__lesions__base", "resnet18__lesions__base",
                "example-cnn__lesions__base"):
        assert job in out
    assert "4 jobs: 4 pending" in out and "dry run: 4 job(s) would run" in out
    assert "KiB" in out and not (tiny_grid / "runs").exists()
    code, out = invoke("grid", "run", str(TINY), "--grid", str(tiny_grid), "--dry-run", "--json")
    jobs = {j["job"]: j for j in json.loads(out)["jobs"]}
    assert all(len(j["run_key"]) == 64 and j["status"] == "pending" and j["rows"] == 48 for j in jobs.values())
    # N x sum(width x readouts) x 4 bytes from the tiny layer map
    assert jobs["resnet18__lesions__base"]["estimated_bytes"] == 48 * (64 + 64 + 128 + 256 + 512 + 512) * 4


def test_three_executors_fill_one_grid_and_one_report(tiny_grid, tmp_path):
    exp = load_experiment(TINY, out=tiny_grid)
    planned = {s.job.id: s for s in grid_status(exp, expand_jobs(exp))}

    code, out = invoke("grid", "run", str(TINY), "--grid", str(tiny_grid), "--only", "medgemma-4b,example-cnn")
    assert code == 0, out
    assert "ran 2 job(s) with the local executor: 2 done, 0 failed" in out

    ray = run_grid(exp, executor="ray", only="lingshu-7b", options={"num_cpus": 1})
    assert [r["status"] for r in ray.results] == ["done"], ray.results

    code, out = invoke("grid", "run", str(TINY), "--grid", str(tiny_grid), "--executor", "slurm", "-X", "cluster=local",
                       "--only", "resnet18")
    assert code == 0, out
    assert "ran 1 job(s) with the slurm executor: 1 done" in out
    assert any((tiny_grid / "submitit").rglob("*_submitted.pkl"))

    statuses = {s.job.id: s for s in grid_status(exp, expand_jobs(exp))}
    assert {s.status for s in statuses.values()} == {"done"}
    for job_id, st in statuses.items():
        run = Run.open(st.run_dir)
        assert run.complete and run.key == planned[job_id].run_key  # the key planned before running is the run's
        assert (probe_dir(run, "linear") / "results.json").is_file()
        log = (tiny_grid / "jobs" / job_id / "job.log").read_text()
        assert f"job {job_id} attempt 1" in log and "done:" in log
    # the size estimate from the tiny layer map is the size written
    assert planned["lingshu-7b__lesions__base"].size == statuses["lingshu-7b__lesions__base"].size

    code, out = invoke("grid", "run", str(TINY), "--grid", str(tiny_grid))
    assert code == 0 and "nothing to do: every job is done" in out

    code, out = invoke("grid", "report", str(TINY), "--grid", str(tiny_grid), "--out", str(tmp_path / "report"))
    assert code == 0, out
    index = json.loads((tmp_path / "report" / "index.json").read_text())
    (group,) = index["groups"]
    assert group["dataset"] == "lesions" and group["condition"] == "base" and not group["missing"]
    assert [m["id"] for m in group["models"]] == ["lingshu-7b", "medgemma-4b", "resnet18", "example-cnn"]
    assert index["synthetic"] and "SYNTHETIC" in out
    report = json.loads((tmp_path / "report" / "lesions__base" / "report.json").read_text())
    assert {m["kind"] for m in report["models"]} == {"mllm", "baseline"}
    html = (tmp_path / "report" / "index.html").read_text()
    assert "lesions__base/report.html" in html and "FHS_V" in html


FAILING = """
[experiment]
tiny = true
batch_size = 2
device = "cpu"
dtype = "fp32"
[probe]
protocol = "split"
controls = false
n_boot = 50
[[model]]
ref = "example-cnn"
[[model]]
ref = "example-cnn"
name = "broken"
layers = "llm.*"                            # well formed, so it fails at run time: a CNN has no LLM layers
[[model]]
ref = "medgemma-4b"
batch_size = 8
[[dataset]]
spec = "synthetic:lesions?n=40&size=32"
name = "a"
[[dataset]]
spec = "synthetic:lesions?n=40&size=32&seed=1"
name = "b"
"""


def test_failures_interrupts_and_resume(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text(FAILING)
    exp = load_experiment(path)
    ids = [j.id for j in expand_jobs(exp)]
    assert len(ids) == 6

    # a partial run of one job (killed after its first shard) shows as partial and is resumed
    cnn_a = next(s for s in grid_status(exp, expand_jobs(exp, "example-cnn__a__base")))

    def stop(batch_no):
        if batch_no == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract("example-cnn", "synthetic:lesions?n=40&size=32", exp.runs_dir, tiny=True, batch_size=2, device="cpu",
                dtype="fp32", progress=False, on_batch=stop)
    (partial,) = grid_status(exp, expand_jobs(exp, "example-cnn__a__base"))
    assert partial.status == "partial" and partial.note == "rows 16/40" and partial.run_dir == cnn_a.run_dir

    # interrupt the grid after two jobs
    seen: list[str] = []

    def interrupt_after_two(result):
        seen.append(result["job"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(exp, on_result=interrupt_after_two)
    assert seen == ids[:2]
    by_id = {s.job.id: s for s in grid_status(exp, expand_jobs(exp))}
    assert by_id[ids[0]].status == "done" and by_id[ids[1]].status == "done"
    assert all(by_id[i].status == "pending" for i in ids[2:])
    stamps = {i: (Path(by_id[i].run_dir) / "manifest.json").stat().st_mtime_ns for i in ids[:2]}

    # the re-run runs only the missing jobs; the broken one fails without stopping the others
    again = run_grid(exp)
    assert [r["job"] for r in again.results] == ids[2:]
    failed = [r for r in again.results if r["status"] == "failed"]
    assert [r["job"] for r in failed] == ["broken__a__base", "broken__b__base"]
    assert "pattern 'llm.*' matches none of the layers of 'example-cnn'" in failed[0]["error"]
    assert Path(failed[0]["log"]).is_file()
    assert "Traceback" in Path(failed[0]["log"]).read_text()
    assert all((Path(by_id[i].run_dir) / "manifest.json").stat().st_mtime_ns == stamps[i] for i in ids[:2])

    code, out = invoke("grid", "status", str(path))
    assert code == 0
    assert "6 jobs: 4 done, 2 failed" in out
    assert "FAILED broken__a__base" in out and "job.log" in out

    code, out = invoke("grid", "run", str(path))  # failed jobs are retried, done ones never
    assert code == 1 and "ran 2 job(s) with the local executor: 0 done, 2 failed" in out
    states = {i: json.loads((exp.jobs_dir / i / "state.json").read_text()) for i in ids}
    assert states["broken__a__base"]["attempts"] == 2 and states[ids[0]]["attempts"] == 1


REAL = """
[experiment]
device = "cpu"
dtype = "fp32"
batch_size = 8
[probe]
controls = false
n_boot = 50
[[model]]
ref = "medgemma-4b"
source = "./ckpt"                          # a local checkpoint directory, relative to this file
device_map = "auto"
max_memory = { cpu = "2GiB" }
[[model]]
ref = "example-cnn"
tiny = true
[[dataset]]
spec = "synthetic:lesions?n=40&size=32"
name = "lesions"
[[train]]
recipe = "vision-tower"                    # medprobe train: the MLLM's vision tower as a classifier
models = "mllm"
epochs = 1
batch_size = 8
"""


def test_real_weight_job_is_keyed_at_load_and_never_reloaded(tmp_path):
    from medprobe.models.zoo import get_adapter, get_card

    card = get_card("medgemma-4b")
    get_adapter(card.family).save_tiny_checkpoint(card, tmp_path / "ckpt")
    path = tmp_path / "exp.toml"
    path.write_text(REAL)
    exp = load_experiment(path)
    job = expand_jobs(exp, "medgemma-4b")[0]
    assert job.spec["load"] == {"source": str((tmp_path / "ckpt").resolve()), "device_map": "auto",
                                "max_memory": {"cpu": "2GiB"}}
    (before,) = grid_status(exp, [job])
    assert before.status == "pending" and before.run_key is None and before.size is None and before.rows == 40

    code, out = invoke("grid", "run", str(path), "--dry-run")
    assert "(at load)" in out and "medgemma-4b__lesions__train-vision-tower" in out and "3 jobs: 3 pending" in out
    outcome = run_grid(exp)
    assert [r["status"] for r in outcome.results] == ["done", "done", "done"], outcome.results
    (after,) = grid_status(exp, [job])
    run = Run.open(after.run_dir)
    assert after.status == "done" and after.run_key == run.key and after.size_source == "run"
    assert run.manifest["model"]["weights"] == f"local:{(tmp_path / 'ckpt').resolve()}"
    assert not any("tiny random" in r for r in run.manifest["synthetic_reasons"])
    assert run_grid(exp).to_run == []  # done jobs are recognised from their state, without loading the model

    index = grid_report(exp, tmp_path / "report")
    (group,) = index["groups"]
    kinds = {m["id"]: m["kind"] for m in group["models"]}
    assert kinds == {"medgemma-4b": "mllm", "example-cnn": "baseline", "medgemma-4b+vision-tower": "trained (vision-tower)"}
    trained = json.loads((tmp_path / "report" / "lesions__base" / "report.json").read_text())["trained"]
    assert trained[0]["recipe"] == "vision-tower" and trained[0]["weights"].startswith("local:")


@pytest.mark.slow
@pytest.mark.parametrize("executor,extra", [("local", []), ("ray", ["-X", "num_cpus=1"]), ("slurm", ["-X", "cluster=local"])])
def test_whole_tiny_study_under_each_executor(executor, extra, tmp_path):
    """The complete tiny experiment, from an empty grid folder, under one executor, to one report."""
    grid = tmp_path / "grid"
    code, out = invoke("grid", "run", str(TINY), "--grid", str(grid), "--executor", executor, *extra)
    assert code == 0, out
    exp = load_experiment(TINY, out=grid)
    statuses = grid_status(exp, expand_jobs(exp))
    assert {s.status for s in statuses} == {"done"} and len(statuses) == 4
    code, out = invoke("grid", "report", str(TINY), "--grid", str(grid), "--out", str(tmp_path / "report"))
    assert code == 0, out
    index = json.loads((tmp_path / "report" / "index.json").read_text())
    (group,) = index["groups"]
    assert [m["id"] for m in group["models"]] == ["lingshu-7b", "medgemma-4b", "resnet18", "example-cnn"]
