"""Regenerate docs/images/contact_sheet.png: the README's `search --db --out` picture.

The demo drive (`core/synthetic.py`, 60 frames, front and rear camera, 320×240 JPEG) is written as
two bags, indexed with a random-weight ViT-B/32 through `av-scene-vlm index`, and searched through
`av-scene-vlm search --db ... --out` — the commands a user runs. Labels and ranks are meaningless
(random weights); the picture shows the layout.

    PYTHONPATH=av_scene_vlm python scripts/docs_contact_sheet.py [OUT_PNG]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "av_scene_vlm"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    from av_scene_vlm.cli.main import main as cli
    from av_scene_vlm.random_weights import build_clip_b32
    from bench_fleet_index import write_drive

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "contact_sheet.png"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = build_clip_b32(tmp / "clip-b32")
        for k in range(2):
            write_drive(tmp / "drives" / f"drive_{k:04d}", seconds=30, rate=1, w=320, h=240, seed=k)
        config = str(ROOT / "av_scene_vlm" / "config" / "scene_vlm.yaml")
        db = str(tmp / "fleet.lance")
        common = ["--model", str(model), "--device", "cpu"]
        if cli(["index", str(tmp / "drives"), "--db", db, "--config", config, "--no-progress", *common]) != 0:
            return 1
        query = ["search", "--db", db, "a pedestrian crossing the road", "--top-k", "8", "--out", str(out)]
        return cli([*query, "--where", "time_of_day != 'night'", *common])


if __name__ == "__main__":
    sys.exit(main())
