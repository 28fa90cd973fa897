"""`av-scene-vlm classify` on a tiny model, offline: notebook-style output, JSON, clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from clip_reference import clip_reference, photo_prompts
from conftest import write_images


@pytest.fixture
def images(tmp_path, rng) -> list[str]:
    """A smooth colour gradient (the tiny model's answer depends on its colours: swapped channels or
    another template change the printed probabilities) and a noise image of an odd shape."""
    yy, xx = np.mgrid[0:90, 0:160]
    gradient = np.stack([xx * 255 // 160, yy * 255 // 90, np.full_like(xx, 40)], -1).astype(np.uint8)
    return write_images(tmp_path, [gradient, rng.integers(0, 256, (300, 7, 3), dtype=np.uint8)])


def test_notebook_output(tiny_clip, images, capsys) -> None:
    """The printed probabilities are transformers' CLIPModel scores of the image file (reference)."""
    code = main(["classify", *images, "--labels", "car", "truck", "bus", "cycle", "--model", str(tiny_clip)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    rgb = cv2.cvtColor(cv2.imread(images[0]), cv2.COLOR_BGR2RGB)
    expected = clip_reference(tiny_clip).classify(rgb, {"t": photo_prompts("car", "truck", "bus", "cycle")})
    ref = expected.tasks["t"]
    assert out[0] == images[0]
    labels = [line.removeprefix("Probability of ").split(":")[0] for line in out[1:5]]
    printed = [float(line.rsplit(": ", 1)[1]) for line in out[1:5]]
    assert labels == ref.labels and all(line.startswith("Probability of ") for line in out[1:5])
    np.testing.assert_allclose(printed, ref.probabilities, atol=0.0005 + 1e-4)  # printed with 3 decimals
    assert out[5] == f"Predicted Label: {ref.label}"
    assert out[6] == images[1] and out[11].startswith("Predicted Label: ")


def test_json_output_in_subprocess(tiny_clip, images, run_cli) -> None:
    proc = run_cli("classify", *images, "--labels", "car", "truck", "--model", str(tiny_clip), "--json")
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["image"] for o in objs] == images
    for o in objs:
        assert set(o) == {"image", "labels", "probabilities", "label"}
        assert o["labels"] == ["car", "truck"]
        assert sum(o["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert o["label"] == o["labels"][int(np.argmax(o["probabilities"]))]


def test_templates_and_config_tasks(tiny_clip, images, capsys, tmp_path) -> None:
    """--template replaces the default prompt: the output is the reference for 'a {} scene' prompts
    and differs from the default template's by far more than the tolerance."""
    cfg = tmp_path / "tasks.yaml"
    cfg.write_text("weather: [clear, rain, snow]\ntime_of_day: [day, night]\n")
    args = ["classify", images[0], "--config", str(cfg), "--model", str(tiny_clip), "--json"]
    assert main([*args, "--template", "a {} scene"]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["task"] for o in objs] == ["weather", "time_of_day"]
    rgb = cv2.cvtColor(cv2.imread(images[0]), cv2.COLOR_BGR2RGB)
    labels = {"weather": ["clear", "rain", "snow"], "time_of_day": ["day", "night"]}
    ref = clip_reference(tiny_clip)
    scene = ref.classify(rgb, {t: {lab: [f"a {lab} scene"] for lab in ls} for t, ls in labels.items()})
    photo = ref.classify(rgb, {t: photo_prompts(*ls) for t, ls in labels.items()})
    for o in objs:
        assert o["labels"] == labels[o["task"]]
        np.testing.assert_allclose(o["probabilities"], scene.tasks[o["task"]].probabilities, atol=1e-4)
    gap = max(np.abs(scene.tasks[t].probabilities - photo.tasks[t].probabilities).max() for t in labels)
    assert gap > 1e-2, "the two templates score alike: this test could not tell them apart"
    # Two templates are ensembled: each label's prompts averaged, as in the reference.
    assert main([*args, "--template", "a {} scene", "--template", "a photo of a {}."]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    both = ref.classify(
        rgb, {t: {lab: [f"a {lab} scene", f"a photo of a {lab}."] for lab in ls} for t, ls in labels.items()}
    )
    for o in objs:
        np.testing.assert_allclose(o["probabilities"], both.tasks[o["task"]].probabilities, atol=1e-4)


def test_error_exit_codes(tiny_clip, images, tmp_path, capsys) -> None:
    """1 for an image or a model that cannot be read or found, 2 for a bad argument (core.exit_codes)."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    assert main(["classify", str(bad), "--labels", "a", "b", "--model", str(tiny_clip)]) == 1
    assert "cannot read image" in capsys.readouterr().err
    assert main(["classify", str(tmp_path / "missing.png"), "--labels", "a", "b"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["classify", images[0], "--labels", "a", "b", "--model", "nobody/no-such-model"]) == 1
    err = capsys.readouterr().err
    assert "nobody/no-such-model" in err and "hf download" in err and "Traceback" not in err
    assert main(["classify", images[0], "--labels", "onlyone", "--model", str(tiny_clip)]) == 2
    assert "at least 2 labels" in capsys.readouterr().err
    # Neither --labels nor --config: the package's config/scene_vlm.yaml, every vehicle task.
    assert main(["classify", images[0], "--model", str(tiny_clip), "--json"]) == 0
    tasks = {json.loads(line)["task"] for line in capsys.readouterr().out.splitlines()}
    assert {"weather", "time_of_day", "road_user"} <= tasks, tasks


def test_cuda_graphs_option(tiny_clip, images, capsys) -> None:
    """--cuda-graphs reaches the engine: 'off' runs, 'on' without a GPU is one line and exit 2."""
    base = [
        "classify",
        images[0],
        "--labels",
        "car",
        "truck",
        "--model",
        str(tiny_clip),
        "--backend",
        "torch",
    ]
    assert main([*base, "--cuda-graphs", "off"]) == 0
    capsys.readouterr()
    assert main([*base, "--cuda-graphs", "on"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cuda_graphs on needs a CUDA device" in err[0]
