"""Experiment files: parsing, defaults, job expansion and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from medprobe.grid import ExperimentError, expand_jobs, load_experiment
from medprobe.grid.resources import ResourceError, parse_max_memory, parse_minutes, parse_size

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


MINIMAL = """
[experiment]
tiny = true
[[model]]
ref = "example-cnn"
[[dataset]]
spec = "synthetic:lesions?n=24&size=32"
"""


def test_examples_parse_and_expand():
    tiny = load_experiment(ROOT / "examples" / "tiny-study.toml")
    jobs = expand_jobs(tiny)
    assert [j.id for j in jobs] == ["lingshu-7b__lesions__base", "medgemma-4b__lesions__base", "resnet18__lesions__base",
                                    "example-cnn__lesions__base"]
    assert all(j.tiny for j in jobs) and tiny.probe_options["controls"] is False
    assert {j.kind for j in jobs} == {"mllm", "baseline"}

    paper = load_experiment(ROOT / "examples" / "paper-study.toml")
    jobs = expand_jobs(paper)
    trained = [j for j in jobs if j.condition.kind == "train"]
    assert len(trained) == 16 * 3 and {j.spec["train"]["recipe"] for j in trained} == {"vision-tower"}
    mllm = [j for j in jobs if j.kind == "mllm" and j.condition.kind != "train"]
    base = [j for j in jobs if j.kind == "baseline"]
    assert len({j.model.ref for j in mllm}) == 16 and len({j.model.ref for j in base}) == 23
    assert {j.dataset.name for j in jobs} == {"busi", "covid-ct", "chest-xray"}
    assert {j.condition.name for j in mllm} == {"base", "lora:train"} and {j.condition.name for j in base} == {"base"}
    assert len(mllm) == 16 * 3 * 2 and len(base) == 23 * 3
    assert not any(j.tiny for j in jobs)
    big = next(j for j in mllm if j.model.ref == "hulu-med-32b")
    assert big.resources.gpus >= 2 and big.spec["load"]["device_map"] == "auto"
    assert big.spec["load"]["trust_remote_code"] is True


def test_defaults_and_relative_paths(tmp_path):
    exp = load_experiment(write(tmp_path, MINIMAL))
    assert exp.out == (tmp_path / "grid-out").resolve() and exp.probes == ("linear",)
    assert [c.name for c in exp.conditions] == ["base"] and exp.resources.gpus == 0
    (job,) = expand_jobs(exp)
    assert job.id == "example-cnn__synthetic__base" and job.spec["batch_size"] == 8
    other = load_experiment(write(tmp_path, MINIMAL), out=tmp_path / "elsewhere")
    assert other.out == (tmp_path / "elsewhere").resolve()


def test_job_digest_tracks_what_changes_features(tmp_path):
    (a,) = expand_jobs(load_experiment(write(tmp_path, MINIMAL)))
    (b,) = expand_jobs(load_experiment(write(tmp_path, MINIMAL.replace("tiny = true", "tiny = true\nbatch_size = 4"))))
    (c,) = expand_jobs(load_experiment(write(tmp_path, MINIMAL.replace("tiny = true", "tiny = true\nlayers = 'stage.*'"))))
    assert a.id == b.id == c.id
    assert a.digest == b.digest  # batch size does not change the features
    assert a.digest != c.digest


def test_refs_groups_resources_and_only(tmp_path):
    text = """
[experiment]
tiny = true
conditions = ["base"]
[resources]
memory = "8GB"
time = "02:00:00"
[[model]]
refs = ["example-cnn", "medgemma-4b"]
resources = { gpus = 2 }
[[dataset]]
spec = "synthetic:lesions?n=24&size=32"
name = "a"
[[dataset]]
spec = "synthetic:lesions?n=24&size=32&seed=1"
name = "b"
"""
    exp = load_experiment(write(tmp_path, text))
    jobs = expand_jobs(exp)
    assert len(jobs) == 4
    assert all(j.resources.gpus == 2 and j.resources.memory == 8 * 10**9 and j.resources.time_min == 120 for j in jobs)
    assert [j.id for j in expand_jobs(exp, "medgemma*")] == ["medgemma-4b__a__base", "medgemma-4b__b__base"]
    assert [j.id for j in expand_jobs(exp, "b")] == ["example-cnn__b__base", "medgemma-4b__b__base"]
    with pytest.raises(ExperimentError, match="matches no job"):
        expand_jobs(exp, "nothing*")


@pytest.mark.parametrize(
    "change, message",
    [
        (("[[model]]", "[[model]]\ngpu = 1"), r"\[\[model\]\] #1: unknown key\(s\) \['gpu'\]"),
        (('ref = "example-cnn"', 'ref = "no-such-model"'), r"\[\[model\]\] #1 \(no-such-model\)\.ref: .*no-such-model"),
        (("tiny = true", "tiny = true\ndtype = 'fp64'"), r"\[experiment\]\.dtype: 'fp64'"),
        (("tiny = true", "tiny = true\nbatch_size = 0"), r"\[experiment\]\.batch_size: must be at least 1"),
        (("tiny = true", "tiny = true\nreadouts = ['pooled']"), r"\[experiment\]\.readouts: unknown readout"),
        (("tiny = true", "tiny = true\nlayers = ['stage.*', 'vison.*']"),
         r"\[experiment\]\.layers: --layers: pattern 'vison\.\*' matches no layer id of any model\. Did you mean 'vision\.\*'"),
        (("tiny = true", "tiny = true\nconditions = ['sft']"), r"\[experiment\]\.conditions\[0\]: unknown condition 'sft'"),
        (("spec = ", "name = 'x'\nspec = "), None),
        (('spec = "synthetic', 'spec = "/data/busi'), r"\[\[dataset\]\] #1\.spec: .*loader scheme"),
        (("[[model]]", "[resources]\ngpus = -1\n[[model]]"), r"\[resources\]\.gpus: expected an integer >= 0"),
        (("[[model]]", "[resources]\nmemory = 'lots'\n[[model]]"), r"\[resources\]\.memory: cannot read size 'lots'"),
        (("[[model]]", "[lora]\nrank = 0\n[[model]]"), r"\[lora\]: --rank must be >= 1"),
        (("[[model]]", "[probe]\nseed = 3\n[[model]]"), r"\[probe\]\.seed: set by the grid"),
        (("[experiment]", "[experimnt]"), r"unknown key\(s\) \['experimnt'\]"),
        (("[[dataset]]", "[[train]]\nrecipe = 'sft'\nmodels = 'all'\n[[dataset]]"), r"\[\[train\]\] #1\.recipe: 'sft'"),
        (("[[dataset]]", "[[train]]\nrecipe = 'linear'\nmodels = ['resnet']\n[[dataset]]"),
         r"\[\[train\]\] #1 \(linear\)\.models: 'resnet' is not a model of this grid"),
        (("[[dataset]]", "[[train]]\nrecipe = 'vision-tower'\nmodels = 'all'\n[[dataset]]"),
         r"recipe 'vision-tower' trains mllm models, and 'example-cnn' \(example-cnn\) is a baseline"),
        (("[[dataset]]", "[[train]]\nrecipe = 'linear'\nmodels = 'all'\nepochs = 0\n[[dataset]]"),
         r"\[\[train\]\] #1\.epochs: must be at least 1"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, change, message):
    path = write(tmp_path, MINIMAL.replace(*change))
    if message is None:  # a valid variant
        expand_jobs(load_experiment(path))
        return
    with pytest.raises(ExperimentError, match=message) as err:
        expand_jobs(load_experiment(path))
    assert str(path) in str(err.value)


def test_structural_errors(tmp_path):
    with pytest.raises(ExperimentError, match="no models"):
        load_experiment(write(tmp_path, "[[dataset]]\nspec = 'digits'\n"))
    with pytest.raises(ExperimentError, match="not valid TOML"):
        load_experiment(write(tmp_path, "[experiment\n"))
    dup = MINIMAL + '[[model]]\nref = "example-cnn"\n'
    with pytest.raises(ExperimentError, match=r"model names \['example-cnn'\] appear more than once"):
        load_experiment(write(tmp_path, dup))
    lora_on_baseline = MINIMAL.replace('ref = "example-cnn"', 'ref = "example-cnn"\nconditions = ["lora:train"]')
    with pytest.raises(ExperimentError, match="applies to MLLMs"):
        expand_jobs(load_experiment(write(tmp_path, lora_on_baseline)))


def test_lora_conditions_apply_to_mllms_only(tmp_path):
    text = MINIMAL.replace("tiny = true", "tiny = true\nconditions = ['base', 'lora:./adapters/{model}-{dataset}']")
    text += '[[model]]\nref = "medgemma-4b"\n'
    jobs = expand_jobs(load_experiment(write(tmp_path, text)))
    assert [j.id for j in jobs] == ["example-cnn__synthetic__base", "medgemma-4b__synthetic__base",
                                    "medgemma-4b__synthetic__lora-model-dataset"]
    assert jobs[2].spec["adapter"] == str((tmp_path / "adapters" / "medgemma-4b-synthetic").resolve())


def test_resource_strings():
    assert parse_size("64GB") == 64 * 10**9 and parse_size("60GiB") == 60 * 2**30 and parse_size(2) == 2 * 10**9
    assert parse_minutes("01:30:00") == 90 and parse_minutes("2h") == 120 and parse_minutes(45) == 45
    assert parse_max_memory(["0=70GiB", "cpu=200GiB"]) == {0: "70GiB", "cpu": "200GiB"}
    with pytest.raises(ResourceError, match="--max-memory: device 'gpu0'"):
        parse_max_memory(["gpu0=70GiB"])


def test_device_map_goes_to_real_weight_mllms_only(tmp_path):
    text = """
[[model]]
ref = "medgemma-4b"
[[model]]
ref = "resnet18"
[[model]]
ref = "lingshu-7b"
tiny = true
[[dataset]]
spec = "digits"
"""
    jobs = {j.model.ref: j for j in expand_jobs(load_experiment(write(tmp_path, text)), device_map="auto")}
    assert jobs["medgemma-4b"].spec["load"] == {"device_map": "auto"}
    assert jobs["resnet18"].spec["load"] == {} and jobs["lingshu-7b"].spec["load"] == {}


def test_ray_refuses_requests_the_cluster_cannot_meet():
    from medprobe.grid.ray_executor import _infeasible

    total = {"CPU": 2.0, "memory": 8e9}
    assert _infeasible({"gpus": 1, "cpus": 1, "memory": None}, total) == "asks for 1 GPU, the Ray cluster has 0 in total"
    assert "memory" in _infeasible({"gpus": 0, "cpus": 1, "memory": 16 * 10**9}, total)
    assert _infeasible({"gpus": 0, "cpus": 2, "memory": 10**9}, total) is None
