"""Layer maps of the tiny stock MLLMs: ids, counts, widths, layouts, feeding layer, version paths."""

from __future__ import annotations

import pytest
import torch

from medprobe.layermap import resolve_layer_map

from ._tiny import CARDS, CASES, QUESTION, adapter_for, hooked, images, tiny

#: case -> (vision path, connector path, llm path, vision CLS tokens, feeding vision block)
EXPECTED = {
    "qwen2_vl": ("model.visual.blocks", "model.visual.merger", "model.language_model.layers", 0, 3),
    "qwen2_5_vl": ("model.visual.blocks", "model.visual.merger", "model.language_model.layers", 0, 3),
    "gemma3": ("model.vision_tower.encoder.layers", "model.multi_modal_projector", "model.language_model.layers", 0, 3),
    "llava-llama": ("model.vision_tower.encoder.layers", "model.multi_modal_projector", "model.language_model.layers", 1, 2),
    "llava-mistral": ("model.vision_tower.encoder.layers", "model.multi_modal_projector", "model.language_model.layers", 1, 2),
    "llava-qwen2": ("model.vision_tower.encoder.layers", "model.multi_modal_projector", "model.language_model.layers", 1, 2),
}


def _vision_counts(config, case):
    vc = config.vision_config
    if case.startswith("qwen"):
        width = vc.embed_dim if case == "qwen2_vl" else vc.hidden_size
        return vc.depth, width
    return vc.num_hidden_layers, vc.hidden_size


@pytest.mark.parametrize("case", CASES)
def test_layer_map_structure(case):
    loaded = tiny(case)
    config = loaded.config
    lm = loaded.layer_map
    vision_path, connector_path, llm_path, cls, feed = EXPECTED[case]
    n_vis, vis_width = _vision_counts(config, case)
    n_llm = config.text_config.num_hidden_layers
    assert n_vis >= 2 and n_llm >= 2
    assert lm.ids == [f"vision.{i:02d}" for i in range(n_vis)] + ["connector"] + [f"llm.{i:02d}" for i in range(n_llm)]
    packed = case.startswith("qwen")
    for i, spec in enumerate(lm.stage("vision")):
        assert spec.path == f"{vision_path}.{i}"
        assert spec.width == vis_width
        assert spec.layout == ("packed" if packed else "NLC")
        assert spec.prefix_tokens == cls
        assert spec.feeds_connector == (i == feed)
        assert spec.used == (i <= feed)
    conn = lm["connector"]
    assert conn.path == connector_path and conn.width == config.text_config.hidden_size
    assert conn.layout == ("packed" if packed else "NLC")
    for i, spec in enumerate(lm.stage("llm")):
        assert spec.path == f"{llm_path}.{i}" and spec.layout == "NLC"
        assert spec.width == config.text_config.hidden_size and spec.used
    assert [s.depth for s in lm] == sorted(s.depth for s in lm) and lm.layers[-1].depth == 1.0
    assert lm.resolved_against == f"tiny random {type(loaded.model).__name__} (seed=0)"
    assert loaded.weights == "tiny-random(seed=0)" and loaded.is_random
    assert type(loaded.model).__name__ == CARDS[case].architecture
    assert not loaded.model.training and next(loaded.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("case", CASES)
def test_hook_outputs_fit_layouts_and_widths(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(2), QUESTION)
    specs = list(loaded.layer_map)
    with hooked(loaded.model, [s.path for s in specs]) as seen:
        adapter.forward(loaded, batch)
    assert set(seen) == {s.path for s in specs}
    seq_len = batch.inputs["input_ids"].shape[1]
    vc = loaded.config.vision_config
    for spec in specs:
        out = seen[spec.path]
        assert out.shape[-1] == spec.width, spec.id
        if spec.layout == "packed":
            assert out.dim() == 2 and out.shape[0] == sum(batch.packed[spec.stage]), spec.id
        else:
            assert out.dim() == 3 and out.shape[0] == 2, spec.id
            if spec.stage == "llm":
                assert out.shape[1] == seq_len
            elif spec.stage == "vision":
                assert out.shape[1] == (vc.image_size // vc.patch_size) ** 2 + spec.prefix_tokens
            else:  # connector: one output token per image-token position of each row
                assert out.shape[1] == int(batch.roles["image"][0].sum())


@pytest.mark.parametrize("case", CASES)
def test_feeding_layer_is_what_the_connector_receives(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(2), QUESTION)
    lm = loaded.layer_map
    feed = next(s for s in lm.stage("vision") if s.feeds_connector)
    conn = lm["connector"]
    with hooked(loaded.model, [feed.path]) as out, hooked(loaded.model, [conn.path], pre=True) as inp:
        adapter.forward(loaded, batch)
    fed, received = out[feed.path], inp[conn.path]
    if case.startswith("llava"):  # hidden_states[-2], CLS dropped ("default" strategy)
        expected = fed[:, feed.prefix_tokens:]
    elif case == "gemma3":  # last_hidden_state = post_layernorm(last block)
        post_ln = dict(loaded.model.named_modules())["model.vision_tower.post_layernorm"]
        with torch.no_grad():
            expected = post_ln(fed)
    else:  # Qwen merger takes the last block's packed output
        expected = fed
    torch.testing.assert_close(received, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_llm_hooks_equal_hidden_states(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(3), QUESTION)
    llm = loaded.layer_map.stage("llm")
    with hooked(loaded.model, [s.path for s in llm]) as seen, torch.no_grad():
        out = loaded.model.model(**batch.inputs, use_cache=False, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == len(llm) + 1
    for i, spec in enumerate(llm[:-1]):
        torch.testing.assert_close(seen[spec.path], hs[i + 1], rtol=0, atol=1e-5)
    last = seen[llm[-1].path]  # raw (pre-norm) last layer; hidden_states[-1] is normed
    assert not torch.allclose(last, hs[-1], atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.model.language_model.norm(last), hs[-1], rtol=0, atol=1e-5)


def _older_layout(name: str, case: str, version: str) -> str:
    """Rename a 5.24 module name to its 4.52-5.5 or <= 4.51 form (the module names of transformers 4.52-5.5 and <= 4.51)."""
    if case.startswith("qwen"):
        if version == "4.51":
            if name.startswith("model.visual"):
                return name[len("model."):]
            return name.replace("model.language_model", "model", 1)
        return name
    if name.startswith("model.vision_tower.") and not name.startswith("model.vision_tower.vision_model"):
        name = "model.vision_tower.vision_model." + name[len("model.vision_tower."):]
    if version == "4.51":
        for new, old in (("model.vision_tower", "vision_tower"), ("model.multi_modal_projector", "multi_modal_projector"),
                         ("model.language_model", "language_model.model")):
            if name.startswith(new):
                return old + name[len(new):]
    return name


@pytest.mark.parametrize("case", ["qwen2_5_vl", "gemma3", "llava-llama"])
@pytest.mark.parametrize("version", ["4.52-5.5", "4.51"])
def test_candidate_paths_of_older_transformers(case, version):
    loaded = tiny(case)
    names = [_older_layout(n, case, version) for n, _ in loaded.model.named_modules()]
    groups = adapter_for(case).layer_groups(CARDS[case], loaded.config)
    lm = resolve_layer_map(CARDS[case].id, groups, names, loaded.config)
    assert lm.ids == loaded.layer_map.ids
    for old, new in zip(lm, loaded.layer_map):
        assert old.path == _older_layout(new.path, case, version)
        assert (old.width, old.layout, old.feeds_connector, old.used) == (new.width, new.layout, new.feeds_connector, new.used)
    if version == "4.51":
        assert all(not s.path.startswith("model.visual") and "language_model.layers" not in s.path for s in lm)
