"""The Python API for programs: VideoEditor.from_pipe, per-step callbacks, in-memory clips, and
the README's usage example run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO
from vidinv import Step, VideoEditor
from vidinv.errors import VidinvError
from vidinv.io.decoders import decode
from vidinv.io.selection import FrameSelection
from vidinv.models.loading import COMPONENTS
from vidinv.models.tiny import build_tiny_components

SAMPLE = REPO / "samples" / "bikes.mp4"
SMALL = {"inversion": {"steps": 3, "source_prompt": "a man"}, "video": {"num_frames": 2, "height": 64, "width": 64}}


@pytest.fixture(scope="module")
def pipe():
    """A diffusers StableDiffusionPipeline on freshly built tiny components (weights as `tiny`'s)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **build_tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


@pytest.fixture(scope="module")
def editor():
    return VideoEditor.from_pretrained("tiny", **SMALL)


def test_from_pipe_uses_the_pipelines_own_components_and_edits_as_the_loaded_model(pipe, editor):
    on_pipe = VideoEditor.from_pipe(pipe, **SMALL)
    for name in COMPONENTS:
        assert getattr(on_pipe.models, name) is getattr(pipe, name, None), name
    assert on_pipe.models.device == pipe.device and on_pipe.models.dtype == pipe.unet.dtype
    assert on_pipe.config.model.dtype == "fp32"
    frames = editor.read(SAMPLE).frames
    # the same weights: the edit on the pipeline's components is the loaded tiny model's, exactly
    assert torch.equal(on_pipe.edit(frames, "a robot").latents, editor.edit(frames, "a robot").latents)


def test_from_pipe_without_a_component_is_a_one_line_error():
    class HalfPipe:
        tokenizer = text_encoder = unet = vae = None
        scheduler = object()

    with pytest.raises(VidinvError, match="has no tokenizer, text_encoder, unet, vae") as err:
        VideoEditor.from_pipe(HalfPipe())
    assert "\n" not in str(err.value)


def test_callbacks_report_every_inversion_and_edit_step_then_every_reconstruction_step(editor):
    calls, last, steps = [], {}, []

    def on_step(step: Step):
        calls.append((step.stage, step.index, step.total))
        last[step.stage] = step.latents
        steps.append(step)

    frames = editor.read(SAMPLE).frames
    out = editor.edit(frames, "a robot", callback_on_step_end=on_step)
    assert calls == [("inversion", i, 3) for i in range(3)] + [("edit", i, 3) for i in range(3)]
    assert last["inversion"] is None and torch.equal(last["edit"], out.latents)
    # the inversion climbs the table's levels (t ascending), the edit comes down them
    assert [s.timestep for s in steps] == out.record.timesteps[::-1] + out.record.timesteps

    calls.clear()
    editor.edit(frames, "a robot", record=out.record, callback_on_step_end=on_step)  # no inversion runs
    assert calls == [("edit", i, 3) for i in range(3)]

    calls.clear()
    regenerated = editor.reconstruct(out.record, callback_on_step_end=on_step)
    assert calls == [("reconstruction", i, 3) for i in range(3)]
    assert torch.equal(editor.decode(last["reconstruction"]), regenerated)


def test_released_latents_are_emptied_after_the_inversion_and_the_edit_is_unchanged(editor):
    latents = editor.encode(editor.read(SAMPLE).frames)
    kept = editor.edit_latents(latents.clone(), "a robot")
    released = editor.edit_latents(latents, "a robot", release_latents=True)
    assert latents.numel() == 0
    assert torch.equal(released.latents, kept.latents)
    assert torch.equal(released.record.latents, kept.record.latents)


def test_an_edit_friendly_edit_reports_its_steps_from_t_skip():
    editor = VideoEditor.from_pretrained("tiny", inversion={"method": "ddpm_ef", "steps": 3}, edit={"skip": 1})
    calls = []
    editor.edit(
        torch.zeros(1, 3, 64, 64), "a robot", callback_on_step_end=lambda s: calls.append((s.stage, s.index, s.total))
    )
    assert calls == [("inversion", i, 3) for i in range(3)] + [("edit", i, 3) for i in (1, 2)]


def test_a_callback_of_four_parameters_gets_stage_index_total_and_latents(editor):
    """The form before `Step`: callback_on_step_end(stage, step, total, latents)."""
    calls, last = [], {}

    def on_step(stage, step, total, latents):
        calls.append((stage, step, total))
        last[stage] = latents

    out = editor.edit(editor.read(SAMPLE).frames, "a robot", callback_on_step_end=on_step)
    assert calls == [("inversion", i, 3) for i in range(3)] + [("edit", i, 3) for i in range(3)]
    assert last["inversion"] is None and torch.equal(last["edit"], out.latents)


def test_read_takes_a_path_a_uint8_array_or_pil_images_alike(editor):
    pictures = decode(SAMPLE, FrameSelection(), "auto").pictures  # (f, H, W, 3) uint8
    images = [Image.fromarray(p) for p in pictures]
    selection = dict(start=3, num_frames=2, stride=2, height=64, width=96)
    clips = [editor.read(source, **selection) for source in (SAMPLE, pictures, images)]
    assert clips[0].frames.shape == (2, 3, 64, 96)
    latents = [editor.encode(clip.frames) for clip in clips]
    for clip, z in zip(clips[1:], latents[1:]):
        assert torch.equal(clip.frames, clips[0].frames) and torch.equal(z, latents[0])
    assert clips[1].fps == clips[2].fps == 8.0 / 2 and clips[1].path is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "must be uint8"),
        ([], "non-empty list of PIL images"),
        ([Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))], "differ in size"),
        (np.zeros((2, 8, 8, 3), dtype=np.uint8), "past the end"),
    ],
)
def test_a_bad_in_memory_clip_is_a_one_line_error(editor, source, message):
    with pytest.raises(VidinvError, match=message) as err:
        editor.read(source, start=5)
    assert "\n" not in str(err.value)


def test_the_readmes_python_api_example_runs_as_written():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "VideoEditor.from_pretrained" in b]
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
