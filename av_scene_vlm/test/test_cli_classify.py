"""`av-scene-vlm classify` on a tiny model, offline: notebook-style output, JSON, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.engine import ZeroShotEngine
from av_scene_vlm.core.tasks import tasks_from_labels


@pytest.fixture
def images(tmp_path, rng) -> list[str]:
    paths = []
    for i, shape in enumerate([(90, 160, 3), (300, 7, 3)]):
        p = tmp_path / f"frame{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, shape, dtype=np.uint8))
        paths.append(str(p))
    return paths


def test_notebook_output(tiny_clip, images, capsys) -> None:
    code = main(["classify", *images, "--labels", "car", "truck", "bus", "cycle", "--model", str(tiny_clip)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    engine = ZeroShotEngine(str(tiny_clip), tasks=tasks_from_labels(["car", "truck", "bus", "cycle"]))
    rgb = cv2.cvtColor(cv2.imread(images[0]), cv2.COLOR_BGR2RGB)
    expected = engine.classify(rgb)[0].tasks[0]
    assert out[0] == images[0]
    assert out[1:5] == [
        f"Probability of {lab}: {p:.3f}"
        for lab, p in zip(expected.labels, expected.probabilities, strict=True)
    ]
    assert out[5] == f"Predicted Label: {expected.label}"
    assert out[6] == images[1] and out[11].startswith("Predicted Label: ")


def test_json_output_in_subprocess(tiny_clip, images) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = ["classify", *images, "--labels", "car", "truck", "--model", str(tiny_clip), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "av_scene_vlm.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["image"] for o in objs] == images
    for o in objs:
        assert set(o) == {"image", "labels", "probabilities", "label"}
        assert o["labels"] == ["car", "truck"]
        assert sum(o["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert o["label"] == o["labels"][int(np.argmax(o["probabilities"]))]


def test_templates_and_config_tasks(tiny_clip, images, capsys, tmp_path) -> None:
    cfg = tmp_path / "tasks.yaml"
    cfg.write_text("weather: [clear, rain, snow]\ntime_of_day: [day, night]\n")
    code = main(
        [
            "classify",
            images[0],
            "--config",
            str(cfg),
            "--model",
            str(tiny_clip),
            "--template",
            "a {} scene",
            "--json",
        ]
    )
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [o["task"] for o in objs] == ["weather", "time_of_day"]


def test_errors_exit_2(tiny_clip, images, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    assert main(["classify", str(bad), "--labels", "a", "b", "--model", str(tiny_clip)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "missing.png"), "--labels", "a", "b"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["classify", images[0], "--labels", "a", "b", "--model", "nobody/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "nobody/no-such-model" in err and "huggingface-cli download" in err and "Traceback" not in err
    assert main(["classify", images[0], "--labels", "onlyone", "--model", str(tiny_clip)]) == 2
    assert "at least 2 labels" in capsys.readouterr().err
    assert main(["classify", images[0], "--model", str(tiny_clip)]) == 2
