"""The README's "Your own videos" commands, read from the README itself and run as written on a
folder of real H.264 videos at three frame sizes whose classes differ visibly (beach, forest,
sea): the fine-tuned classifier must be well above chance, and every command must do what the
README says. Only the budget is cut (``schedule.epochs``) and the test split made larger
(``data.test_fraction``), so the score is measured on more than one video per class."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from pathlib import Path

import pytest
import torch
from _user_videos import SCENES, write_scene_folders

from maskagain.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
BUDGET = {
    "distill": ["schedule.epochs=1", "data.test_fraction=0.25"],
    "finetune": ["schedule.epochs=8", "data.test_fraction=0.25"],
}


def readme_commands() -> list[str]:
    """The ``maskagain`` lines of the first bash block after "Distil a student" in the
    README's "Your own videos" section (continuation lines joined, comments dropped)."""
    text = README.read_text()
    section = text[text.index("## Your own videos") :]
    section = section[section.index("Distil a student") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = block.replace("\\\n", " ")
    lines = [line.split("#")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line.startswith("maskagain ")]


@pytest.mark.e2e
@pytest.mark.slow
def test_readme_own_videos_gives_a_classifier_above_chance(tmp_path, monkeypatch, capsys):
    data = write_scene_folders(tmp_path / "my_videos", per_class=8, frames=24)
    video = next(iter(sorted((data / sorted(SCENES)[0]).glob("*.mp4"))))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == [
        "distill", "finetune", "evaluate", "export", "inspect", "visualize",
    ]  # fmt: skip
    outputs = {}
    try:
        for line in commands:
            argv = shlex.split(line.replace("my_videos/across/a.mp4", str(video)))[1:]
            argv += BUDGET.get(argv[0], [])
            assert main(argv) == 0, line
            outputs[argv[0]] = capsys.readouterr()
    finally:
        torch.set_num_threads(2)
    runs = tmp_path / "runs" / "mine"
    ft = json.loads((runs / "ft" / "summary.json").read_text())
    test = ft["test_result"]
    assert test["split"] == "test" and test["num_videos"] == 6 and test["chance"] == 33.33
    assert test["top1"] >= 83.0 and not test["at_chance"], ft["test"]
    assert f"on the test split ({test['num_videos']} videos" in outputs["finetune"].out
    assert "within noise of chance" not in outputs["finetune"].err
    ev = json.loads((runs / "ft" / "evaluate" / "summary.json").read_text())
    assert ev["top1"] >= 83.0 and isinstance(ev["num_videos"], int) and ev["bad_files"] == 0
    assert "test:          top-1" in outputs["inspect"].out
    assert "loss" in outputs["distill"].out  # the final line carries the loss
    weights = runs / "hf" / "model.safetensors"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~mask
    assert (runs / "distill" / "selections.png").is_file()  # beside the encoder it draws
