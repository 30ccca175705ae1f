"""A labelled set of short real H.264 clips and a nano classifier's run directory, shared by the
predict and ONNX tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from maskagain.models import create_model
from maskagain.models.loading import save_encoder
from tests._user_videos import write_clip

CLASSES = ["across", "still", "updown"]
DATA = dict(
    kind="list", num_frames=4, sampling_rate=2, input_size=32, short_side=36,
    test_clips=2, test_crops=2, num_workers=0,
)  # fmt: skip


def write_videos(root: Path) -> Path:
    """``root/<class>/v<j>.mp4``: 2 short H.264 clips per class, a labelled ``test.txt``."""
    lines = []
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for j in range(2):
            size = ((96, 64), (64, 80))[j]
            write_clip(root / name / f"v{j}.mp4", size, name, frames=20, seed=10 * c + j)
            lines.append(f"{name}/v{j}.mp4 {c}\n")
    (root / "test.txt").write_text("".join(lines))
    return root


def make_run(run: Path, data: dict, seed: int = 0) -> Path:
    """A fine-tuning run directory as ``finetune`` writes it: ``model.safetensors`` with its
    class names, ``classes.txt`` and the resolved ``config.yaml``."""
    torch.manual_seed(seed)
    model = create_model("vit_nano", img_size=32, num_frames=4, patch_size=8, tubelet_size=2)
    model.reset_head(3, fc_norm=True)  # as finetune builds it: mean pooling + fc_norm
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)  # scores far from uniform, so top-1 labels are stable
    save_encoder(model, run / "model.safetensors", {"recipe": "finetune", "class_names": CLASSES})
    (run / "classes.txt").write_text("".join(f"{n}\n" for n in CLASSES))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    return run


def labelled_run(tmp_path_factory, videos: Path, seed: int = 0) -> Path:
    """A nano classifier's run directory (:func:`make_run`) whose config reads ``videos``."""
    data = {**DATA, "root": str(videos), "test_list": str(videos / "test.txt")}
    return make_run(tmp_path_factory.mktemp("ft"), data, seed=seed)
