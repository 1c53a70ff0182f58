"""Planted failures (issue 12, "Done when"): tiny checkpoints of a stock class with the class signal
destroyed at one stage, and their healthy twin, saved with ``save_pretrained``, loaded through the
ordinary local-checkpoint path (``extract --source DIR``), extracted, probed (cv, five probe seeds)
and diagnosed under the ``diagnosis-2`` rules.

The model: a tiny ``LlavaForConditionalGeneration`` (CLIP vision tower, 4 blocks; the 2-layer GELU
projector; a 4-layer Qwen2 LLM), built by the llava adapter's ``build_tiny`` with seeded random
weights. The data: 120 images in an imagefolder, two classes told apart by colour (reddish vs
bluish, under per-image noise and a per-image tint), so the signal is real and strong: the
healthy model carries it to every probed layer, and a random tiny CNN baseline reads it too.

Each failure is planted in the weights, so that the signal is really gone downstream of it (the
features there are identical for every image, which the probes confirm):

* ``vision``: the patch embedding of the vision tower is zeroed -- every vision block sees only
  the position embeddings, so the image never enters the model -> ``visual_representation``;
* ``connector``: the projector's first linear layer is zeroed -- the connector outputs a constant
  -> ``connector_fidelity``;
* ``llm_entry``: the first LLM layer's attention is rewired to write a massive input-independent
  activation (q/k/v weights zeroed, value bias 1, output projection 1e9 on every channel) into the
  residual stream: in float32 the image-token residual (|x| << 32, the spacing of floats at 1e9) is
  rounded away, so every position leaves layer 0 identical for every image -> ``llm_entry``;
* ``llm_through``: the same rewiring at LLM layer 2 of 4 -- the signal is intact at layers 0-1
  and gone from layer 2 on -> ``llm_comprehension``;
* ``final_mapping``: the language-head rows of the two answer tokens are zeroed -- both answers
  score the same whatever the final-token state, which still carries the signal -> ``semantic_mapping``;
* the healthy twin: the same checkpoint without any change -> no mode present.

So that the healthy twin answers with its signal (a random head would not, and its
``semantic_mapping`` would be present), its head rows for the answer tokens ``benign`` /
``malignant`` are a logistic regression of the label on its own normalised final-token state
(:func:`fit_answer_head`), standing in for supervised fine-tuning; every planted checkpoint starts
from those healthy weights. ``P_final`` is each model's own answers (``classify --mode score``),
per sample, in the run's order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.analysis.diagnosis import DIAGNOSIS_VERSION, MODES
from medprobe.analysis.report import ModelInput, build_report
from medprobe.features.extract import extract
from medprobe.tasks.pipeline import probe_run
from medprobe.models.zoo import get_adapter, get_card

pytestmark = pytest.mark.slow

CARD = "llava-1.5-7b"
SEEDS = (0, 1, 2, 3, 4)
N_IMAGES = 120
MASSIVE = 1e9
#: planted stage -> the one mode that must be present
EXPECTED = {
    "vision": "visual_representation",
    "connector": "connector_fidelity",
    "llm_entry": "llm_entry",
    "llm_through": "llm_comprehension",
    "final_mapping": "semantic_mapping",
    "healthy": None,
}
#: stages whose own answers (``classify --mode score``) give P_final
ANSWERING = ("final_mapping", "healthy")


def _write_dataset(root: Path) -> str:
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        cls = i % 2
        base = np.array([170.0, 70.0, 70.0] if cls == 0 else [70.0, 70.0, 170.0])
        img = base + rng.normal(0, 40, (32, 32, 3)) + rng.normal(0, 30, 3)
        folder = root / ("benign" if cls == 0 else "malignant")  # single tokens of the tiny tokenizer
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return f"imagefolder:{root}"


def _massive_constant(attn: torch.nn.Module) -> None:
    """Make a Qwen2 attention block write MASSIVE into every channel of every position, whatever
    the input: attention weights input-independent (q, k zeroed), values = the bias (1)."""
    attn.q_proj.weight.zero_()
    attn.k_proj.weight.zero_()
    attn.v_proj.weight.zero_()
    attn.v_proj.bias.fill_(1.0)
    attn.o_proj.weight.zero_()
    attn.o_proj.weight[:, 0] = MASSIVE


def plant(model: torch.nn.Module, stage: str, answer_ids: tuple[int, ...]) -> None:
    """Plant the failure of ``stage`` into a tiny LlavaForConditionalGeneration (module doc)."""
    m = model.model
    with torch.no_grad():
        if stage == "vision":
            m.vision_tower.embeddings.patch_embedding.weight.zero_()
        elif stage == "connector":
            m.multi_modal_projector.linear_1.weight.zero_()
        elif stage == "llm_entry":
            _massive_constant(m.language_model.layers[0].self_attn)
        elif stage == "llm_through":
            _massive_constant(m.language_model.layers[2].self_attn)
        elif stage == "final_mapping":
            model.lm_head.weight[list(answer_ids)] = 0.0  # every answer scores the same, whatever the state
        elif stage != "healthy":
            raise ValueError(stage)


def fit_answer_head(model: torch.nn.Module, final_state: np.ndarray, labels: np.ndarray, answer_ids: tuple[int, ...]) -> None:
    """Give the healthy model an answer that uses its final-token state, as supervised fine-tuning
    would: the language-head rows of the two answer tokens become a logistic regression of the
    label on the normalised final-token state (``lm_head(norm(h))``); ``final_state`` (N, D) is
    the last LLM layer's ``last-token`` feature of the model's own extraction."""
    from sklearn.linear_model import LogisticRegression

    norm = model.model.language_model.norm
    h = torch.from_numpy(np.array(final_state, dtype=np.float32))
    with torch.no_grad():
        z = norm(h).numpy()
    clf = LogisticRegression(fit_intercept=False, C=10.0, max_iter=2000).fit(z, labels)
    w = torch.from_numpy(clf.coef_[0].astype(np.float32))
    with torch.no_grad():
        model.lm_head.weight[answer_ids[0]] = -2.0 * w
        model.lm_head.weight[answer_ids[1]] = 2.0 * w


def _save(loaded, directory: Path) -> Path:
    loaded.model.save_pretrained(directory)
    loaded.processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """stage -> (complete run, classify run or None), extracted once (every seed reuses them), plus
    the baseline run."""
    from medprobe.tasks.classify import classify

    root = tmp_path_factory.mktemp("planted")
    spec = _write_dataset(root / "data")
    card = get_card(CARD)
    adapter = get_adapter(card.family)
    tiny_card = dataclasses.replace(card, settings={**card.settings, "text_model_type": "qwen2"})
    base = adapter.build_tiny(tiny_card, seed=0)
    tok = base.processor.tokenizer
    answer_ids = tuple(tok.convert_tokens_to_ids(c) for c in ("benign", "malignant"))
    assert tok.unk_token_id not in answer_ids
    # the untrained base, extracted once, gives the final-token state its healthy answer head reads
    base_run = extract(CARD, spec, root / "runs", source=str(_save(base, root / "ckpt" / "base")), batch_size=40,
                       progress=False, layers="llm.03", readouts="last-token")
    fit_answer_head(base.model, base_run.features("llm.03", "last-token"), base_run.labels, answer_ids)
    healthy_state = {k: v.clone() for k, v in base.model.state_dict().items()}
    out = {}
    for stage in EXPECTED:
        base.model.load_state_dict(healthy_state)  # the same healthy weights for every stage
        plant(base.model, stage, answer_ids)
        ckpt = _save(base, root / "ckpt" / stage)
        run = extract(CARD, spec, root / "runs", source=str(ckpt), batch_size=40, progress=False)
        answers = classify(CARD, spec, root / "answers", mode="score", source=str(ckpt), batch_size=40,
                           progress=False) if stage in ANSWERING else None
        out[stage] = (run, answers)
    out["baseline"] = (extract("example-cnn", spec, root / "runs", tiny=True, batch_size=40, progress=False), None)
    return out


def _report(runs, seed: int) -> dict:
    inputs = []
    for stage, (run, answers) in runs.items():
        res = probe_run(run, "linear", protocol="cv", seeds=(seed,), controls=False, n_permutations=0)
        card = run.manifest["model"]["card"]
        extra = {}
        if answers is not None:  # the model's own answers, per sample, in the run's order
            correct = {a["id"]: bool(a["correct"]) for a in answers.answers()}
            per_sample = np.array([correct[i] for i in run.sample_ids])
            extra = {"p_final": float(per_sample.mean()), "p_final_n": int(per_sample.size),
                     "p_final_correct": per_sample, "p_final_method": "score"}
        inputs.append(ModelInput.from_probe_results(
            model=stage, kind=card["kind"], layers=run.layers, results=res, manifest=run.manifest, **extra,
        ))
    return build_report(inputs)


def test_checkpoints_load_through_the_local_path_and_the_failures_are_real(runs):
    for stage in EXPECTED:
        m = runs[stage][0].manifest
        assert m["model"]["weights"].startswith("local:") and m["model"]["weights"].endswith(f"ckpt/{stage}")
        assert m["condition"]["weights"] == "pretrained"
    # downstream of a planted failure the features are the same for every image
    dead = {"vision": "vision.00", "connector": "connector", "llm_entry": "llm.00", "llm_through": "llm.02"}
    alive = {"vision": None, "connector": "vision.02", "llm_entry": "connector", "llm_through": "llm.01"}
    for stage, layer in dead.items():
        x = np.asarray(runs[stage][0].features(layer, "image-mean"), dtype=np.float64)
        assert np.ptp(x, axis=0).max() <= 1e-5 * max(1.0, np.abs(x).max()), (stage, layer)
        if alive[stage]:
            y = np.asarray(runs[stage][0].features(alive[stage], "image-mean"))
            assert np.ptp(y, axis=0).max() > 1e-3, (stage, alive[stage])


@pytest.mark.parametrize("seed", SEEDS)
def test_each_planted_failure_is_diagnosed_and_its_healthy_twin_is_not(runs, seed):
    report = _report(runs, seed)
    assert report["diagnosis_settings"]["version"] == DIAGNOSIS_VERSION == "diagnosis-2"
    by_model = {m["id"]: m for m in report["models"]}
    # the probes see what was planted: the healthy twin reads the signal everywhere
    acc = {r["id"] + "/" + r["readout"]: r["accuracy"] for r in by_model["healthy"]["layers"]}
    assert min(acc.values()) >= 0.9, acc
    for stage, expected in EXPECTED.items():
        verdicts = {v["mode"]: v for v in by_model[stage]["diagnosis"]["linear"]}
        assert set(verdicts) == set(MODES)
        present = sorted(mode for mode, v in verdicts.items() if v["verdict"] == "present")
        assert present == ([expected] if expected else []), (stage, seed, {m: (v["verdict"], v.get("effect"), v.get("p_value")) for m, v in verdicts.items()})
        if expected:
            v = verdicts[expected]
            assert v["effect"] >= 0.3 and v["p_value"] < 0.05 and v["ci95"][0] > 0, (stage, v)
        if stage not in ANSWERING:  # no answers: semantic_mapping says why it is not assessed
            assert verdicts["semantic_mapping"]["verdict"] == "not_assessed"
    # the healthy twin's answers use the final-token state; the planted head's answers ignore it
    assert by_model["healthy"]["p_final"] >= 0.9 and by_model["final_mapping"]["p_final"] <= 0.6
    assert by_model["healthy"]["diagnosis"]["linear"][-1]["verdict"] == "absent"
