"""An output folder that cannot be written, for the commands beside extract / probe / report
(docs/reliability.md, "Store, extraction and probing", row 51): classify, zeroshot, train and
finetune check that they can write before any forward pass or training and say so in one line;
nothing is written. The folder is unwritable here because a regular file stands where a folder
must be made (unwritable for root too, unlike a chmod-ed folder).

Tiny random models on the synthetic lesion set: pipeline checks, not findings.
"""

from __future__ import annotations

import pytest

from _store_util import medprobe, tree_checksums

DATA = "synthetic:lesions?n=24&size=32"


@pytest.fixture
def blocked(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    return blocker / "out"


@pytest.mark.parametrize(
    ("command", "args", "what"),
    [
        ("classify", ["-m", "llava-med-v1.5", "--tiny", "--limit", "6", "--store"], "the classify run"),
        ("zeroshot", ["-m", "pubmedclip", "--tiny", "--out"], "the zero-shot run (zeroshot.json)"),
        ("train", ["-m", "resnet18", "--tiny", "--recipe", "linear", "--epochs", "1", "--out"],
         "the trained run (train.json, checkpoint/)"),
        ("finetune", ["-m", "llava-med-v1.5", "--tiny", "--max-steps", "1", "--out"], "the LoRA adapter"),
    ],
)
def test_row51_unwritable_output_is_one_line_before_any_work(command, args, what, blocked, tmp_path, capsys):
    before = tree_checksums(tmp_path)
    rc, out, err = medprobe(capsys, command, "-d", DATA, *args, blocked)
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ") and f"cannot write {what} there (" in lines[0], lines[0]
    assert "choose a writable" in lines[0]
    assert tree_checksums(tmp_path) == before  # nothing written, the blocking file untouched
