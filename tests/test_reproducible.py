"""Reproducible files: the same frames give the same bytes, and the same config and seed give
byte-identical videos, on a fresh run and on a rerun that reuses the inversion record."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from vidinv.cli import main
from vidinv.io import read_video
from vidinv.io.writing import CODECS, video_filename, write_video
from vidinv.jobs.edit import VIDEOS

EDIT_ARGS = ["video.num_frames=3", "video.height=64", "video.width=64", "inversion.steps=2"]


def digest(path: Path) -> str:
    """md5 of a file, or of a folder's file names and bytes in name order."""
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    md5 = hashlib.md5()
    for file in sorted(path.iterdir()):
        md5.update(file.name.encode() + file.read_bytes())
    return md5.hexdigest()


def pictures(frames=5, height=48, width=64) -> np.ndarray:
    """Smooth random uint8 pictures (f, H, W, 3) that move from frame to frame."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (frames, height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".gif", ""])
def test_the_same_frames_written_twice_give_the_same_bytes(tmp_path, suffix):
    first = write_video(tmp_path / f"a{suffix}", pictures(), fps=8)
    second = write_video(tmp_path / f"b{suffix}", pictures(), fps=8)
    assert digest(first) == digest(second)


@pytest.mark.parametrize("codec", ["ffv1", "png"])
def test_the_lossless_codecs_give_back_the_exact_pictures(tmp_path, codec):
    path = write_video(tmp_path / video_filename("clip", codec), pictures(), fps=8)
    decoded = read_video(path, size=None)  # 48x64: already multiples of 8, nothing resampled
    expected = (pictures().astype(np.float32) / 127.5 - 1).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(decoded.frames.numpy(), expected)


def test_video_filename_follows_the_codec():
    assert [video_filename("edited", codec) for codec in CODECS] == ["edited.mp4", "edited.mkv", "edited"]


def videos_md5(out: Path, codec: str = "h264") -> dict[str, str]:
    """The md5 of each video an edit wrote in `out` (edited, source, side_by_side)."""
    return {stem: digest(out / video_filename(stem, codec)) for stem in VIDEOS}


def edit(out: Path, *extra: str) -> dict[str, str]:
    """Run `vidinv edit` on the demo config; the md5 of each video it wrote."""
    assert main(["--quiet", "edit", "configs/demo.yaml", *EDIT_ARGS, f"runtime.output_dir={out}", *extra]) == 0
    codec = next((arg.split("=", 1)[1] for arg in extra if arg.startswith("runtime.codec=")), "h264")
    return videos_md5(out, codec)


@pytest.mark.parametrize("codec", ["h264", "png"])
@pytest.mark.slow
def test_same_config_and_seed_give_byte_identical_videos_fresh_and_with_the_record_reused(tmp_path, codec):
    first = edit(tmp_path / "a", f"runtime.codec={codec}")
    fresh = edit(tmp_path / "b", f"runtime.codec={codec}")
    reused = edit(tmp_path / "a", f"runtime.codec={codec}", "runtime.overwrite=true")  # reuses a's record
    assert fresh == first
    assert reused == first
