"""core.visualize (overlay, grid, similarity picture) and the `plot` / `similarity` sub-commands.

Real OpenCV, matplotlib and a tiny random CLIP; no mocks. Figures are checked through their
documented pixel-size formulas and their Axes, never through screenshots.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from av_scene_vlm.cli.main import main
from av_scene_vlm.core.engine import FrameResult, TaskResult, ZeroShotEngine
from av_scene_vlm.core.tasks import parse_tasks, tasks_from_labels
from av_scene_vlm.core.visualize import (
    SIMILARITY_TITLE,
    format_lines,
    grid_figure,
    grid_shape,
    grid_size,
    overlay_heatmap,
    plot_grid,
    plot_similarity,
    similarity_figure,
    similarity_size,
)

LINES = ["road_user: pedestrian 0.91", "weather: rain 0.77"]


def _jet(value: int) -> np.ndarray:
    return cv2.applyColorMap(np.array([[value]], np.uint8), cv2.COLORMAP_JET)[0, 0]


def _blend(frame_bgr: np.ndarray, colour: np.ndarray, alpha: float) -> np.ndarray:
    f = np.broadcast_to(frame_bgr, (1, 1, 3)).astype(np.uint8)
    c = np.broadcast_to(colour, (1, 1, 3)).astype(np.uint8)
    return cv2.addWeighted(f, 1 - alpha, c, alpha, 0)[0, 0]


# ---- overlay ---------------------------------------------------------------------------------------
def test_overlay_is_bgr_of_the_frame_when_alpha_is_zero(rng) -> None:
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = overlay_heatmap(rgb, rng.random((48, 64), dtype=np.float32), alpha=0.0)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb[:, :, ::-1])


def test_overlay_blends_min_max_normalised_map() -> None:
    rgb = np.full((40, 80, 3), (200, 100, 50), np.uint8)
    heat = np.zeros((40, 80), np.float32)
    heat[:, 40:] = 0.3  # raw cosines: low on the left, high on the right
    out = overlay_heatmap(rgb, heat + 0.1)
    bgr = np.array([50, 100, 200], np.uint8)
    assert not np.array_equal(out, np.broadcast_to(bgr, out.shape))
    assert not np.array_equal(out[20, 10], out[20, 70])
    # min-max per frame: the low side gets the colormap's lowest colour, the high side its highest
    np.testing.assert_allclose(out[20, 10], _blend(bgr, _jet(0), 0.45), atol=1)
    np.testing.assert_allclose(out[20, 70], _blend(bgr, _jet(255), 0.45), atol=1)
    # only the relative pattern matters: an affine change of the map gives the same picture
    np.testing.assert_array_equal(overlay_heatmap(rgb, heat * 7 - 3), out)


def test_overlay_constant_and_non_finite_maps(rng) -> None:
    rgb = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    const = overlay_heatmap(rgb, np.full((30, 30), 0.25, np.float32))
    zeros = overlay_heatmap(rgb, np.zeros((30, 30), np.float32))
    np.testing.assert_array_equal(const, zeros)  # constant map -> normalised to zeros
    heat = rng.random((30, 30)).astype(np.float32)
    heat[3, 4], heat[5, 6] = np.nan, np.inf
    assert overlay_heatmap(rgb, heat).shape == (30, 30, 3)
    assert overlay_heatmap(rgb, np.full((30, 30), np.nan)).shape == (30, 30, 3)


def test_overlay_text_is_drawn_top_left_only(rng) -> None:
    rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    heat = rng.random((240, 320)).astype(np.float32)
    plain = overlay_heatmap(rgb, heat)
    text = overlay_heatmap(rgb, heat, lines=LINES)
    assert not np.array_equal(plain[:30, :120], text[:30, :120])
    np.testing.assert_array_equal(plain[120:, 200:], text[120:, 200:])
    # the box darkens what it covers, so light text stands out on any background
    assert text[:30, :120].mean() < plain[:30, :120].mean()


def test_overlay_max_width_downscales_keeping_aspect(rng) -> None:
    rgb = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    heat = rng.random((1080, 1920)).astype(np.float32)
    assert overlay_heatmap(rgb, heat, max_width=640, lines=LINES).shape == (360, 640, 3)
    assert overlay_heatmap(rgb, heat, max_width=4000).shape == (1080, 1920, 3)  # never upscales
    # a heatmap of another size is resized to the frame
    assert overlay_heatmap(rgb[:100, :200], rng.random((7, 7))).shape == (100, 200, 3)


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (300, 7), (2, 2)])
def test_overlay_tiny_frames(shape, rng) -> None:
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = overlay_heatmap(rgb, rng.random(shape).astype(np.float32), lines=LINES * 3, max_width=200)
    width = min(shape[1], 200)
    assert out.shape[1] == width and out.shape[2] == 3 and out.dtype == np.uint8


def test_overlay_rejects_bad_input(rng) -> None:
    rgb = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(rgb, np.zeros((10, 10)), alpha=1.5)
    with pytest.raises(ValueError, match="heatmap"):
        overlay_heatmap(rgb, np.zeros((10, 10, 3)))


# ---- format_lines ------------------------------------------------------------------------------------
def _result(tasks: list[TaskResult]) -> FrameResult:
    return FrameResult(tasks, np.zeros(4, np.float32), 0.0)


def test_format_lines() -> None:
    weather = TaskResult("weather", ["clear", "rain", "fog"], np.array([0.1, 0.77, 0.13]), np.zeros(3))
    plain = TaskResult("default", ["car", "truck"], np.array([0.012, 0.988]), np.zeros(2))
    assert format_lines(_result([weather, plain])) == ["weather: rain 0.77", "truck 0.99"]
    assert format_lines(_result([weather]), top_k=2) == ["weather: rain 0.77, fog 0.13"]
    assert format_lines(_result([plain]), top_k=5) == ["truck 0.99, car 0.01"]
    with pytest.raises(ValueError):
        format_lines(_result([plain]), top_k=0)


def test_format_lines_of_engine_result_and_overlay(tiny_clip, rng) -> None:
    tasks = parse_tasks({"road_user": ["pedestrian", "cyclist"], "weather": ["clear", "rain"]})
    engine = ZeroShotEngine(str(tiny_clip), tasks=tasks)
    frame = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    result = engine.classify(frame, heatmap=True)[0]
    lines = format_lines(result)
    assert [line.split(":")[0] for line in lines] == ["road_user", "weather"]
    top = result.task("weather")
    assert lines[1] == f"weather: {top.label} {top.probability:.2f}"
    assert overlay_heatmap(frame, result.heatmap, lines=lines).shape == (90, 160, 3)


# ---- grid ---------------------------------------------------------------------------------------------
def test_grid_shape() -> None:
    assert grid_shape(1) == (1, 1)
    assert grid_shape(2) == (1, 2)
    assert grid_shape(5) == (2, 3)
    assert grid_shape(36) == (6, 6)
    assert grid_shape(37) == (7, 6)  # capped at 6 columns
    assert grid_shape(100) == (17, 6)
    assert grid_shape(3, cols=10) == (1, 3)  # never more columns than images
    assert grid_shape(7, cols=2) == (4, 2)
    with pytest.raises(ValueError):
        grid_shape(0)


@pytest.mark.parametrize(
    ("n", "cols", "panel", "dpi"), [(1, None, 3.0, 100), (5, None, 2.0, 50), (7, 2, 1.5, 72)]
)
def test_plot_grid_pixel_size_and_panels(n, cols, panel, dpi, tmp_path, rng) -> None:
    shapes = [(40, 60, 3), (60, 20, 3), (33, 33, 3), (5, 90, 3), (90, 5, 3), (1, 1, 3), (64, 64, 3)]
    images = [rng.integers(0, 256, shapes[i], dtype=np.uint8) for i in range(n)]
    titles = [
        f"label{i} (0.{i}9)" if i % 2 else f"weather: rain (0.77)\ntime: night (0.{i}1)" for i in range(n)
    ]
    out = tmp_path / "grid.png"
    size = plot_grid(images, titles, out=out, cols=cols, panel_size=panel, dpi=dpi)
    rows, c = grid_shape(n, cols)
    assert size == grid_size(n, cols, panel, dpi) == (round(c * panel * dpi), round(rows * panel * dpi))
    assert cv2.imread(str(out)).shape == (size[1], size[0], 3)

    fig = grid_figure(images, titles, cols=cols, panel_size=panel, dpi=dpi)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == len(fig.axes) == n
    assert [ax.get_title().split("\n")[0] for ax in axes] == [t.split("\n")[0] for t in titles]
    # row-major placement: panel k sits in column k % cols, row k // cols (row 0 at the top)
    for k, ax in enumerate(axes):
        box = ax.get_position()
        assert int(box.x0 * c) == k % c
        assert int((1 - box.y1) * rows) == k // c


def test_plot_grid_wraps_long_titles_and_rejects_mismatch(tmp_path, rng) -> None:
    img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    fig = grid_figure([img], ["word " * 60])
    title = fig.axes[0].get_title()
    assert 1 < title.count("\n") + 1 <= 4 and title.endswith("…")
    with pytest.raises(ValueError, match="titles"):
        plot_grid([img, img], ["one"], out=tmp_path / "x.png")


# ---- similarity picture ---------------------------------------------------------------------------------
def test_similarity_size_formula() -> None:
    assert similarity_size(8, 8) == (1200, 1030)
    assert similarity_size(1, 1, dpi=50) == (250, 165)
    # however many inputs, the matrix stays within 20 x 16 inches
    for n_i, n_t in [(150, 3), (3, 300), (1000, 1000)]:
        w, h = similarity_size(n_i, n_t)
        assert w <= (3.6 + 20 + 0.4) * 100 + 1 and h <= (0.8 + 16 + 0.3) * 100 + 1


def test_plot_similarity(tmp_path, rng) -> None:
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(40, 60, 3), (60, 20, 3), (30, 30, 3)]]
    texts = ["a truck on a highway", "a baby crossing the road " * 8]
    sim = rng.uniform(-0.2, 0.4, (3, 2))
    out = tmp_path / "sim.png"
    size = plot_similarity(images, texts, sim, out=out, dpi=60)
    assert size == similarity_size(3, 2, dpi=60)
    assert cv2.imread(str(out)).shape == (size[1], size[0], 3)

    fig = similarity_figure(images, texts, sim)
    (ax,) = fig.axes
    assert len(ax.images) == 1 + len(images)  # the matrix and one thumbnail per image
    matrix = ax.images[0].get_array()
    np.testing.assert_allclose(matrix, sim.T)  # texts are rows, images columns
    for i, thumb in enumerate(ax.images[1:]):  # thumbnails sit above their column
        left, right, bottom, top = thumb.get_extent()
        assert (left, right) == (i - 0.5, i + 0.5) and max(bottom, top) < -0.5
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    assert cells == {(i, t): f"{sim[i, t]:.2f}" for i in range(3) for t in range(2)}
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == texts[0] and labels[1].endswith("…") and labels[1].count("\n") <= 1
    assert SIMILARITY_TITLE in [t.get_text() for t in fig.texts]
    with pytest.raises(ValueError, match="n_images, n_texts"):
        similarity_figure(images, texts, sim.T)


# ---- CLI ------------------------------------------------------------------------------------------------
def test_cli_plot(tiny_clip, image_files, tmp_path, capsys) -> None:
    out = tmp_path / "grid.png"
    labels = ["car", "truck", "bus", "cycle"]
    code = main(["plot", *image_files, "--labels", *labels, "--model", str(tiny_clip), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == str(out)
    w, h = grid_size(3)
    assert cv2.imread(str(out)).shape == (h, w, 3)

    cfg = tmp_path / "tasks.yaml"
    cfg.write_text("weather: [clear, rain]\ntime_of_day: [day, night]\n")
    out2 = tmp_path / "grid2.png"
    args = ["plot", *image_files, "--config", str(cfg), "--model", str(tiny_clip), "--out", str(out2)]
    assert main([*args, "--cols", "1", "--dpi", "40"]) == 0
    assert cv2.imread(str(out2)).shape == (3 * 120, 120, 3)


def test_cli_similarity_json_matches_engine(tiny_clip, image_files, tmp_path, capsys) -> None:
    texts = ["a truck on a highway", "a baby crossing the road", "snow"]
    out = tmp_path / "heatmap.png"
    code = main(
        [
            "similarity",
            *image_files,
            "--texts",
            *texts,
            "--model",
            str(tiny_clip),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    obj = json.loads(capsys.readouterr().out)
    assert obj["images"] == image_files and obj["texts"] == texts
    engine = ZeroShotEngine(str(tiny_clip), tasks=tasks_from_labels(["a", "b"]))
    frames = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in image_files]
    np.testing.assert_allclose(np.array(obj["cosine"]), engine.similarity(frames, texts), atol=1e-5)
    w, h = similarity_size(3, 3)
    assert cv2.imread(str(out)).shape == (h, w, 3)

    # picture only: stdout is the path; JSON only: no file needed
    assert (
        main(["similarity", image_files[0], "--texts", "x", "--model", str(tiny_clip), "--out", str(out)])
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["similarity", image_files[0], "--texts", "x", "y", "--model", str(tiny_clip), "--json"]) == 0
    assert np.array(json.loads(capsys.readouterr().out)["cosine"]).shape == (1, 2)


def test_cli_error_exit_codes(tiny_clip, image_files, tmp_path, capsys) -> None:
    """2 for a bad argument, 1 for an image that cannot be read or an output that cannot be written."""
    model = ["--model", str(tiny_clip)]
    out = ["--out", str(tmp_path / "o.png")]
    no_dir = ["--out", str(tmp_path / "no" / "dir" / "g.png")]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    cases = [
        (["plot", image_files[0], *model, *out], "--labels", 2),
        (["plot", str(bad), "--labels", "a", "b", *model, *out], "cannot read image", 1),
        (["plot", str(tmp_path / "nope.png"), "--labels", "a", "b", *model, *out], "no such file", 1),
        (["plot", image_files[0], "--labels", "a", "b", *model, *no_dir], "does not exist", 1),
        (["plot", image_files[0], "--labels", "a", "b", *model, "--out", str(tmp_path)], "is a directory", 1),
        (["plot", image_files[0], "--labels", "a", "b", *model, *out, "--cols", "0"], "--cols", 2),
        (["similarity", image_files[0], *model, *out], "--texts", 2),
        (["similarity", image_files[0], "--texts", "a", " ", *model, *out], "empty", 2),
        (["similarity", image_files[0], "--texts", "a", *model], "--out PNG and/or --json", 2),
        (["similarity", str(bad), "--texts", "a", *model, "--json"], "cannot read image", 1),
        (["similarity", image_files[0], "--texts", "a", *model, *no_dir], "does not exist", 1),
    ]
    for argv, message, code in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert err.startswith(f"av-scene-vlm {argv[0]}: error: ") and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()
