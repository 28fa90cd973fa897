"""Drawing: the two pictures of the original notebooks (and, from `overlay`, the heatmap overlay the
node publishes on every frame, in pure OpenCV). `plot_grid` ("plot images with their labels")
and `plot_similarity` (the CLIP notebook's cosine matrix with image thumbnails) use matplotlib's
object API (`Figure` + `FigureCanvasAgg`): pyplot is never imported, so no global backend or figure
state is touched and it works headless and from any thread.

Both plots have a pixel size that is a pure function of their arguments (no `bbox_inches="tight"`),
documented on each function, so callers and tests can know it in advance.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .overlay import as_rgb_uint8 as _as_rgb_uint8
from .overlay import format_lines, overlay_heatmap

__all__ = ["format_lines", "overlay_heatmap", "plot_grid", "plot_similarity"]  # overlay: its own module

SIMILARITY_TITLE = "Cosine similarity between text and image features"

# Grid layout.
MAX_GRID_COLS = 6

# Similarity figure geometry, in inches (see `similarity_size`).
SIM_LABEL_IN = 3.6  # left margin for the texts
SIM_RIGHT_IN = 0.4
SIM_TITLE_IN = 0.8
SIM_BOTTOM_IN = 0.3
SIM_MAX_CELL_IN = 1.0
SIM_MAX_MATRIX_W_IN = 20.0
SIM_MAX_MATRIX_H_IN = 16.0
SIM_THUMB_ROWS = 1.2  # matrix rows' worth of height above row 0 for the thumbnails
_THUMB_TOP, _THUMB_BOTTOM = -1.6, -0.6  # thumbnail band in data coordinates (row 0 is at y=0)


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the grid for `n` images: cols defaults to ceil(sqrt(n)) capped at 6, and is
    never more than n; rows = ceil(n / cols)."""
    if n < 1:
        raise ValueError("need at least one image")
    if cols is not None and cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    c = min(n, cols if cols is not None else min(MAX_GRID_COLS, math.ceil(math.sqrt(n))))
    return math.ceil(n / c), c


def grid_size(n: int, cols: int | None = None, panel_size: float = 3.0, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of `plot_grid`'s PNG: (round(cols·panel_size·dpi),
    round(rows·panel_size·dpi)) with (rows, cols) = `grid_shape(n, cols)`."""
    rows, c = grid_shape(n, cols)
    return round(c * panel_size * dpi), round(rows * panel_size * dpi)


def grid_figure(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    cols: int | None = None,
    panel_size: float = 3.0,
    dpi: int = 100,
):  # -> matplotlib.figure.Figure
    """The grid as a Figure: one square `panel_size`-inch panel per image, title lines on top
    (multi-line titles: '\\n'), image letterboxed below, axes off. One Axes per image, in order."""
    from matplotlib.figure import Figure

    if len(images) != len(titles):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    if panel_size <= 0 or dpi <= 0:
        raise ValueError("panel_size and dpi must be positive")
    rows, c = grid_shape(len(images), cols)
    width_px, height_px = grid_size(len(images), cols, panel_size, dpi)
    fig = _figure(Figure, width_px, height_px, dpi)
    font = min(14.0, max(6.0, panel_size * 3.5))
    chars = max(8, int(panel_size * 72 / (0.55 * font)))  # characters per title line that fit
    wrapped = [_wrap(t, chars, max_lines=4) for t in titles]
    n_lines = max(t.count("\n") + 1 for t in wrapped)
    band = n_lines * font * 1.25 / 72 + 0.08  # title band height, inches
    pad = 0.04 * panel_size
    fig_w, fig_h = c * panel_size, rows * panel_size
    thumb = max(16, round(2 * panel_size * dpi))  # plenty for the panel; keeps rendering cheap
    for k, (img, title) in enumerate(zip(images, wrapped, strict=True)):
        r, col = divmod(k, c)
        left = col * panel_size + pad
        bottom = (rows - 1 - r) * panel_size + pad
        w, h = panel_size - 2 * pad, max(panel_size - band - 2 * pad, 0.05 * panel_size)
        ax = fig.add_axes((left / fig_w, bottom / fig_h, w / fig_w, h / fig_h))
        ax.imshow(_thumbnail(_as_rgb_uint8(img), thumb), interpolation="antialiased")
        ax.set_title(title, fontsize=font, pad=3)
        ax.set_axis_off()
    return fig


def plot_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    out: str | Path,
    cols: int | None = None,
    panel_size: float = 3.0,
    dpi: int = 100,
) -> tuple[int, int]:
    """Save a grid of titled RGB images (the notebook's "plot images with their labels", titles such
    as "truck (0.99)") as PNG; returns its (width, height) in pixels, always `grid_size(...)`."""
    fig = grid_figure(images, titles, cols=cols, panel_size=panel_size, dpi=dpi)
    return save_figure(fig, out)


def similarity_size(n_images: int, n_texts: int, dpi: int = 100) -> tuple[int, int]:
    """(width, height) in pixels of `plot_similarity`'s PNG.

    cell = min(1.0, 20 / n_images, 16 / (n_texts + 1.2)) inches (square matrix cells; the matrix
    stays within 20 × 16 in however many inputs), then
    width = round((3.6 + n_images·cell + 0.4)·dpi), height = round((0.8 + (n_texts + 1.2)·cell + 0.3)·dpi)
    — 3.6 in for the texts on the left, 1.2 rows for the thumbnails above the matrix, 0.8 in for the
    title. 8 images × 8 texts at 100 dpi: 1200 × 1030 px.
    """
    cell = _sim_cell(n_images, n_texts)
    width_in = SIM_LABEL_IN + n_images * cell + SIM_RIGHT_IN
    height_in = SIM_TITLE_IN + (n_texts + SIM_THUMB_ROWS) * cell + SIM_BOTTOM_IN
    return round(width_in * dpi), round(height_in * dpi)


def _sim_cell(n_images: int, n_texts: int) -> float:
    if n_images < 1 or n_texts < 1:
        raise ValueError("need at least one image and one text")
    return min(
        SIM_MAX_CELL_IN, SIM_MAX_MATRIX_W_IN / n_images, SIM_MAX_MATRIX_H_IN / (n_texts + SIM_THUMB_ROWS)
    )


def similarity_figure(
    images: Sequence[np.ndarray],
    texts: Sequence[str],
    sim: np.ndarray,
    *,
    dpi: int = 100,
    vmin: float | None = None,
    vmax: float | None = None,
):  # -> matplotlib.figure.Figure
    """The CLIP notebook's picture as a Figure: texts as rows, images as columns with their
    thumbnails above, each cell annotated with its cosine (2 decimals).

    `sim` is (n_images, n_texts) as `ZeroShotEngine.similarity` returns it (shown transposed).
    Colours span vmin..vmax (default: the matrix's own range — the notebook's fixed 0.1..0.3 suits
    only trained ViT-B/32). Long texts are wrapped to two lines and shortened with '…'; when cells
    get too small to read (> ~80 images or texts), the numbers are left out.
    """
    from matplotlib.figure import Figure

    sim = np.asarray(sim, dtype=np.float64)
    n_images, n_texts = len(images), len(texts)
    if sim.shape != (n_images, n_texts):
        raise ValueError(f"sim must be (n_images, n_texts) = ({n_images}, {n_texts}), got {sim.shape}")
    cell = _sim_cell(n_images, n_texts)
    width_px, height_px = similarity_size(n_images, n_texts, dpi)
    fig = _figure(Figure, width_px, height_px, dpi)
    fig_w, fig_h = width_px / dpi, height_px / dpi
    mat_h = (n_texts + SIM_THUMB_ROWS) * cell
    ax = fig.add_axes((SIM_LABEL_IN / fig_w, SIM_BOTTOM_IN / fig_h, n_images * cell / fig_w, mat_h / fig_h))
    matrix = sim.T  # rows = texts, columns = images (the notebook's orientation)
    finite = matrix[np.isfinite(matrix)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    cmap = "viridis"
    ax.imshow(matrix, vmin=lo, vmax=hi, cmap=cmap, interpolation="nearest")

    label_font = min(12.0, max(4.0, cell * 72 * 0.3))
    chars = max(10, int(SIM_LABEL_IN * 72 / (0.6 * label_font)) - 3)
    lines = 2 if cell * 72 >= 2.6 * label_font else 1
    ax.set_yticks(range(n_texts), [_wrap(t, chars, max_lines=lines) for t in texts], fontsize=label_font)
    ax.set_xticks([])

    thumb = max(8, round(cell * dpi * 2))
    for i, img in enumerate(images):
        # origin="lower" with the inverted y axis puts the thumbnail's first row on top (upright).
        ax.imshow(
            _thumbnail(_as_rgb_uint8(img), thumb, square=True),
            extent=(i - 0.5, i + 0.5, _THUMB_TOP, _THUMB_BOTTOM),
            origin="lower",
        )

    value_font = min(12.0, cell * 72 * 0.28)
    if value_font >= 4.0:
        cm = _colormap(cmap)
        for t in range(n_texts):
            for i in range(n_images):
                v = matrix[t, i]
                shade = np.asarray(cm((v - lo) / (hi - lo)))[:3] if np.isfinite(v) else np.ones(3)
                dark = float(shade @ np.array([0.299, 0.587, 0.114])) < 0.5
                colour = "white" if dark else "black"
                ax.text(i, t, f"{v:.2f}", ha="center", va="center", fontsize=value_font, color=colour)
    for side in ("left", "top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_xlim(-0.5, n_images - 0.5)
    ax.set_ylim(n_texts - 0.5, -0.5 - SIM_THUMB_ROWS)
    title_font = min(16.0, fig_w * 72 / (0.55 * len(SIMILARITY_TITLE)))
    title_y = 1 - 0.45 * SIM_TITLE_IN / fig_h
    fig.text(0.5, title_y, SIMILARITY_TITLE, ha="center", va="center", fontsize=title_font)
    return fig


def plot_similarity(
    images: Sequence[np.ndarray],
    texts: Sequence[str],
    sim: np.ndarray,
    *,
    out: str | Path,
    dpi: int = 100,
) -> tuple[int, int]:
    """Save the CLIP notebook's text-image cosine picture (see `similarity_figure`) as PNG; returns
    its (width, height) in pixels, always `similarity_size(len(images), len(texts), dpi)`."""
    return save_figure(similarity_figure(images, texts, sim, dpi=dpi), out)


def render_figure(fig) -> np.ndarray:
    """Rasterize a Figure with Agg; H×W×3 uint8 RGB (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def save_figure(fig, out: str | Path) -> tuple[int, int]:
    """Write a Figure as PNG (encoded by OpenCV: exact pixel size, real OSError for bad paths);
    returns (width, height)."""
    rgb = render_figure(fig)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise OSError(f"could not encode PNG for {out}")
    Path(out).write_bytes(png.tobytes())
    return rgb.shape[1], rgb.shape[0]


# ---- helpers --------------------------------------------------------------------------------------
def _figure(figure_cls, width_px: int, height_px: int, dpi: int):
    # Agg truncates width·dpi to int; the small excess makes the pixel size exactly width_px × height_px.
    fig = figure_cls(figsize=((width_px + 0.01) / dpi, (height_px + 0.01) / dpi), dpi=dpi)
    fig.patch.set_facecolor("white")
    return fig


def _colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def _wrap(text: str, width: int, *, max_lines: int) -> str:
    """Wrap each '\\n'-separated line to `width` chars; at most `max_lines` lines, cut with '…'."""
    out: list[str] = []
    for para in str(text).split("\n"):
        out.extend(textwrap.wrap(para, width, break_long_words=True) or [""])
    if len(out) > max_lines:
        out = out[:max_lines]
        out[-1] = out[-1][: max(1, width - 1)].rstrip() + "…"
    return "\n".join(out)


def _thumbnail(img: np.ndarray, max_side: int, *, square: bool = False) -> np.ndarray:
    """Downscale to at most `max_side` px (INTER_AREA); `square` letterboxes on white."""
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    if square:
        h, w = img.shape[:2]
        side = max(h, w)
        canvas = np.full((side, side, 3), 255, np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = img
        img = canvas
    return img
