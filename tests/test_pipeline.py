"""`vidinv.VidinvVideoEditPipeline`, the diffusers pipeline: loaded the ways diffusers loads a
custom pipeline (`custom_pipeline=` a file or a folder, `from_pipe`, a saved folder), its call
following diffusers' conventions, and its frames those of `vidinv edit` with the same settings
(the videos written through vidinv's writer are byte-equal)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline

import vidinv
import vidinv.pipeline
from tests.conftest import REPO, SAMPLE, SOURCE, TARGET, TINY_EDIT, cli_tiny_edit, moving_square
from vidinv.diffusers_pipeline import VidinvVideoEditPipelineOutput
from vidinv.errors import VidinvError
from vidinv.io import read_video
from vidinv.io.decoders import decode
from vidinv.io.selection import FrameSelection
from vidinv.io.video import frames_to_uint8
from vidinv.io.writing import write_video

# the settings of both runs: `vidinv edit` reads them as its config file, the pipeline as arguments
SETTINGS = TINY_EDIT
CALL = {"num_inference_steps": 2, "height": 64, "width": 64, "num_frames": 3}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pictures(output) -> np.ndarray:
    """uint8 (f, H, W, 3) of a pipeline output of type "pil"."""
    (video,) = output.frames
    return np.stack([np.asarray(image) for image in video])


@pytest.fixture(scope="module", autouse=True)
def modules_cache(tmp_path_factory):
    """diffusers copies custom pipeline files into its modules cache: a temporary one here."""
    import diffusers.utils.dynamic_modules_utils as dynamic

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        patch.setattr(sys, "path", list(sys.path))  # diffusers appends the cache to sys.path
        yield


@pytest.fixture(scope="module")
def model_folder(tiny_models, tmp_path_factory) -> Path:
    """The tiny model saved as a diffusers Stable Diffusion folder."""
    folder = tmp_path_factory.mktemp("tiny_sd") / "model"
    tiny_models.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> dict:
    """`vidinv edit` with SETTINGS: its config file, edited.mp4's md5 and the clip's fps."""
    config, edited_md5 = cli_tiny_edit(tmp_path_factory.mktemp("cli"))
    return {"config": config, "md5": edited_md5, "fps": read_video(SAMPLE, num_frames=1).fps}


@pytest.fixture(scope="module")
def pipe(model_folder):
    loaded = DiffusionPipeline.from_pretrained(
        model_folder, custom_pipeline=vidinv.pipeline.__file__, trust_remote_code=True
    )
    loaded.set_progress_bar_config(disable=True)
    return loaded


def written_md5(frames: np.ndarray, fps: float, path: Path) -> str:
    """The md5 of uint8 pictures written by vidinv's writer (as `vidinv edit` writes edited.mp4)."""
    return md5(write_video(path, frames, fps))


def test_a_custom_pipeline_file_loads_the_packages_class_and_edits_as_vidinv_edit(pipe, cli_run, tmp_path):
    assert type(pipe) is vidinv.VidinvVideoEditPipeline  # the installed class, not a copy of it
    out = pipe(str(SAMPLE), SOURCE, TARGET, **CALL)
    assert isinstance(out, VidinvVideoEditPipelineOutput) and len(out.frames) == 1 and len(out.frames[0]) == 3
    assert written_md5(pictures(out), cli_run["fps"], tmp_path / "pipe.mp4") == cli_run["md5"]
    # the same settings given as vidinv's config file: the same video again
    again = pipe(str(SAMPLE), vidinv_config=cli_run["config"])
    np.testing.assert_array_equal(pictures(again), pictures(out))


def test_a_folder_holding_pipeline_py_is_a_custom_pipeline_too(model_folder, tmp_path):
    code = tmp_path / "vidinv_pipeline"
    code.mkdir()
    shutil.copy(vidinv.pipeline.__file__, code / "pipeline.py")
    loaded = DiffusionPipeline.from_pretrained(model_folder, custom_pipeline=str(code), trust_remote_code=True)
    assert type(loaded) is vidinv.VidinvVideoEditPipeline
    direct = vidinv.VidinvVideoEditPipeline.from_pretrained(model_folder)  # the class itself loads the folder too
    assert loaded.unet.config == direct.unet.config and type(direct.scheduler) is type(loaded.scheduler)


def test_from_pipe_shares_the_components_edits_in_memory_pictures_as_vidinv_edit_and_leaves_the_unet_as_it_was(
    model_folder, cli_run, tmp_path
):
    sd = StableDiffusionPipeline.from_pretrained(model_folder)
    processors = dict(sd.unet.attn_processors)
    pipe = vidinv.VidinvVideoEditPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler"):
        assert getattr(pipe, name) is getattr(sd, name), name
    # the clip as PIL images of the decoded pictures (as diffusers.utils.load_video gives them)
    decoded = decode(SAMPLE, FrameSelection(num_frames=3)).pictures
    from PIL import Image

    out = pipe([Image.fromarray(p) for p in decoded], SOURCE, TARGET, num_inference_steps=2, height=64, width=64)
    assert written_md5(pictures(out), cli_run["fps"], tmp_path / "pipe.mp4") == cli_run["md5"]
    assert {k: type(v) for k, v in sd.unet.attn_processors.items()} == {k: type(v) for k, v in processors.items()}
    assert all(sd.unet.attn_processors[k] is v for k, v in processors.items())  # the same objects back


def test_from_pipe_of_an_sdxl_pipeline_takes_its_second_text_encoder():
    from diffusers import StableDiffusionXLPipeline

    from vidinv.models.tiny import build_tiny_sdxl_components

    sdxl = StableDiffusionXLPipeline(**build_tiny_sdxl_components())
    pipe = vidinv.VidinvVideoEditPipeline.from_pipe(sdxl)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.text_encoder_2 is sdxl.text_encoder_2 and pipe.tokenizer_2 is sdxl.tokenizer_2
    frames = moving_square(2, 64)
    out = pipe((frames + 1) / 2, "a square", "a circle", num_inference_steps=2, output_type="latent")
    editor = vidinv.VideoEditor.from_pipe(sdxl, inversion={"steps": 2, "source_prompt": "a square"})
    assert torch.equal(out.frames[0], editor.edit(frames, "a circle").latents)


def test_output_types_return_dict_and_a_reused_record(pipe):
    first = pipe(str(SAMPLE), SOURCE, TARGET, **CALL)
    reused = dict(record=first.record, **CALL)
    as_np = pipe(str(SAMPLE), SOURCE, TARGET, output_type="np", **reused).frames
    as_pt = pipe(str(SAMPLE), SOURCE, TARGET, output_type="pt", **reused).frames
    latents = pipe(str(SAMPLE), SOURCE, TARGET, output_type="latent", **reused).frames
    (as_tuple,) = pipe(str(SAMPLE), SOURCE, TARGET, return_dict=False, **reused)
    assert as_np.shape == (1, 3, 64, 64, 3) and as_np.dtype == np.float32
    assert 0 <= as_np.min() and as_np.max() <= 1
    assert as_pt.shape == (1, 3, 3, 64, 64) and as_pt.dtype == torch.float32
    np.testing.assert_array_equal(as_pt.permute(0, 1, 3, 4, 2).numpy(), as_np)
    assert latents.shape == (1, 3, 4, 8, 8)
    # the pictures of "pil" are the floats of "np" in 8 bits (rounded), and the record's edit is the first's
    assert np.abs(as_np[0] * 255 - pictures(first).astype(np.float32)).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(pictures(first), np.stack([np.asarray(image) for image in as_tuple[0]]))
    assert first.stats["frame_calls"] > 0 and "inversion" in first.stats["seconds"]
    with pytest.raises(ValueError, match="output_type"):
        pipe(str(SAMPLE), SOURCE, TARGET, output_type="mp4", **CALL)


def test_every_clip_form_gives_the_same_edit():
    """uint8 pictures, float arrays and tensors in [0, 1] (with or without a batch of one) are one clip."""
    pipe = vidinv.VidinvVideoEditPipeline(**_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    frames = moving_square(2, 64)  # values -1 and 1: exact in 8 bits and in [0, 1]
    unit = (frames + 1) / 2
    forms = {
        "uint8": frames_to_uint8(frames),
        "np": unit.permute(0, 2, 3, 1).numpy(),
        "pt": unit,
        "pt batch": unit[None],
        "np batch": unit.permute(0, 2, 3, 1).numpy()[None],
    }
    results = {
        name: pipe(clip, SOURCE, TARGET, num_inference_steps=2, output_type="latent").frames
        for name, clip in forms.items()
    }
    for name, latents in results.items():
        assert torch.equal(latents, results["uint8"]), name
    with pytest.raises(VidinvError, match="one video per call"):
        pipe(torch.stack([unit, unit]), SOURCE, TARGET, num_inference_steps=2)


def _tiny_components() -> dict:
    from vidinv.models.tiny import build_tiny_components

    return build_tiny_components()


def test_callback_on_step_end_follows_diffusers(pipe):
    calls = []

    def callback(p, step_index, timestep, callback_kwargs):
        calls.append((p, step_index, float(timestep), sorted(callback_kwargs), p.num_timesteps))
        assert callback_kwargs["latents"].shape == (3, 4, 8, 8)
        return callback_kwargs

    pipe(str(SAMPLE), SOURCE, TARGET, callback_on_step_end=callback, **CALL)
    assert [c[1] for c in calls] == [0, 1] and all(c[0] is pipe and c[3] == ["latents"] and c[4] == 2 for c in calls)
    assert calls[0][2] > calls[1][2]  # timesteps from noisy to clean
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(str(SAMPLE), SOURCE, TARGET, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])
    with pytest.raises(VidinvError, match="cannot be replaced"):
        pipe(str(SAMPLE), SOURCE, TARGET, callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0}, **CALL)


def test_generator_seed_and_arguments_over_vidinv_config(pipe):
    seeded = pipe(str(SAMPLE), SOURCE, TARGET, generator=torch.Generator().manual_seed(7), **CALL)
    configured = pipe(
        str(SAMPLE), SOURCE, TARGET, vidinv_config={"inversion": {"seed": 7}, "edit": {"seed": 7}}, **CALL
    )
    assert seeded.record.seed == configured.record.seed == 7
    np.testing.assert_array_equal(pictures(seeded), pictures(configured))
    # an argument wins over vidinv_config; vidinv_config over vidinv's defaults
    out = pipe(
        str(SAMPLE),
        SOURCE,
        TARGET,
        num_inference_steps=3,
        inversion_method="ddim",
        vidinv_config={
            "inversion": {"steps": 5, "method": "freeinv"},
            "video": {"num_frames": 2, "height": 64, "width": 64},
        },
        output_type="latent",
    )
    assert (out.record.steps, out.record.method, out.frames.shape) == (3, "ddim", (1, 2, 4, 8, 8))
    with pytest.raises(VidinvError, match="edit.method"):
        pipe(str(SAMPLE), SOURCE, TARGET, edit_method="nope", **CALL)


def test_save_pretrained_writes_a_folder_that_loads_the_pipeline_without_custom_pipeline(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "VidinvVideoEditPipeline"]
    assert (tmp_path / "saved" / "pipeline.py").read_text() == Path(vidinv.pipeline.__file__).read_text()
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    assert type(loaded) is vidinv.VidinvVideoEditPipeline


def test_import_vidinv_leaves_diffusers_until_the_pipeline_is_asked_for():
    code = (
        "import sys, vidinv; assert 'diffusers' not in sys.modules; "
        "cls = vidinv.VidinvVideoEditPipeline; assert 'diffusers' in sys.modules; print(cls.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "vidinv.diffusers_pipeline"


def test_the_vae_encodes_frames_alike_whatever_their_memory_layout(tiny_models):
    """`vidinv edit`'s stream gives channels-last views (frames_from_uint8), `VideoEditor.read`
    contiguous frames: the same pictures must give the same latents for the two to agree."""
    from vidinv.io.video import frames_from_uint8
    from vidinv.models import encode_frames

    pictures = frames_to_uint8(moving_square(2, 64))
    view = frames_from_uint8(pictures)
    assert not view.is_contiguous()
    assert torch.equal(encode_frames(tiny_models.vae, view), encode_frames(tiny_models.vae, view.contiguous()))
