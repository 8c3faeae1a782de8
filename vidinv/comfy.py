"""ComfyUI nodes: Load model -> Invert clip -> Edit (as many as wanted) -> IMAGE frames.

The node pack comfyui/vidinv_nodes re-exports `NODE_CLASS_MAPPINGS` and
`NODE_DISPLAY_NAME_MAPPINGS` for ComfyUI's custom-node loader; the nodes run `vidinv.VideoEditor`
(one implementation of the edit, the one `vidinv edit` runs), so a graph with the settings of a
`vidinv edit` run gives its frames exactly (tests/test_comfy.py).

- **Load Model** (`VIDINV_MODEL`): a model vidinv loads (`tiny`, a hub id, a diffusers folder or
  a single .safetensors file, e.g. one in ComfyUI/models/checkpoints), with cross-frame attention.
- **Load Video** (`IMAGE`, fps): the selected frames of a video file or image folder, decoded by
  vidinv as `vidinv edit` decodes them, not resized (the Invert node resizes, as `vidinv edit` does).
- **Invert Clip** (`VIDINV_RECORD`): resizes the frames (`video.height` / `video.width`) and
  inverts them with the source prompt; the record handle feeds any number of Edit nodes, which
  reuse it without inverting again (a FateZero edit recomputes the source's attention maps, as
  `edit.fatezero.store=recompute`).
- **Edit** (`IMAGE`): the edit method, target prompt, guidance and seed, an optional `MASK` (the
  edit's mask, as `edit.mask`), and any other setting as `key=value` lines
  (`edit.pnp.feature_steps=0.6`), as `vidinv edit` takes them.
- **Reconstruct** (`IMAGE`): the record regenerated with its own prompt (how faithful the inversion is).

ComfyUI's types: `IMAGE` is float32 (frames, H, W, 3) in [0, 1]; the nodes read it as 8-bit
pictures (as ComfyUI's image loaders make them) and return the 8-bit pictures vidinv's writers
write, as k/255. `MASK` is float (frames, H, W) or (H, W) in [0, 1], 1 where the edit may change
the clip: the Edit node gives it to the edit as its mask (`edit.mask`, docs/methods.md §8: resized
to the frames, then to the latent grid; outside it the edit follows the source branch at every step).

Inside ComfyUI each step updates the node's progress bar and the queue's Cancel stops the run at
the next step (`comfy.utils.ProgressBar`, `comfy.model_management`); elsewhere those are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidinv.config import CHOICES, Config, config_from_dict, config_with
from vidinv.errors import VidinvError
from vidinv.registry import EDIT_METHODS, INVERSION_METHODS

CATEGORY = "vidinv"
MODEL = "VIDINV_MODEL"
RECORD = "VIDINV_RECORD"
SEED_MAX = 0xFFFFFFFFFFFFFFFF  # ComfyUI's seed widgets' range
SETTINGS = (
    "STRING",
    {
        "default": "",
        "multiline": True,
        "tooltip": "more vidinv settings, one key=value a line as `vidinv edit` takes them (# comments)",
    },
)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (tensors inside)
class LoadedModel:
    """A loaded model and the config it was loaded with (model and runtime sections)."""

    models: object = field(repr=False)
    config: Config = field(repr=False)

    def __repr__(self) -> str:
        return f"LoadedModel({self.config.model.pretrained!r}, {self.models.device}, {self.models.dtype})"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (tensors inside)
class InvertedClip:
    """A record handle: the inversion record, the source frames as processed (f, 3, H, W) in
    [-1, 1], and the config they were made with. Edit nodes read it and never change it."""

    model: LoadedModel
    config: Config = field(repr=False)
    frames: torch.Tensor = field(repr=False)
    record: object = field(repr=False)

    def __repr__(self) -> str:
        f, _, h, w = self.frames.shape
        return f"InvertedClip({self.record.method}, {self.record.steps} steps, {f} frames {h}x{w})"


def parse_settings(text: str) -> dict:
    """`key=value` lines (YAML values, as the command line's overrides; # starts a comment) -> {key: value}."""
    import yaml

    values = {}
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise VidinvError(f"settings line {number}: {raw.strip()!r} is not of the form key=value")
        key, value = (part.strip() for part in line.split("=", 1))
        try:
            values[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            values[key] = value
    return values


def with_settings(config: Config, values: dict, settings: str = "") -> Config:
    """`config` with dotted `values`, then the `settings` lines over them (validated)."""
    return config_with(config, {**values, **parse_settings(settings)}, origin="settings")


def to_pictures(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE (frames, H, W, C) in [0, 1] -> uint8 pictures (frames, H, W, 3)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise VidinvError(f"images: an IMAGE must be (frames, H, W, 3) in [0, 1], got {shape}")
    rgb = images[..., :3].detach().float().cpu()
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def to_image(frames: torch.Tensor) -> torch.Tensor:
    """Frames (f, 3, H, W) in [-1, 1] -> ComfyUI IMAGE: the 8-bit pictures, float32 (f, H, W, 3) k/255."""
    from vidinv.io.video import frames_to_uint8

    return torch.from_numpy(frames_to_uint8(frames).copy()).float() / 255


def comfy_progress():
    """A step callback that moves ComfyUI's progress bar (one per stage) and stops at Cancel; None
    outside ComfyUI."""
    try:
        import comfy.model_management as management
        import comfy.utils as utils
    except ImportError:
        return None
    bars = {}

    def on_step(step) -> None:
        management.throw_exception_if_processing_interrupted()
        if step.stage not in bars:
            bars[step.stage] = utils.ProgressBar(max(1, step.total - step.index))
        bars[step.stage].update(1)

    return on_step


def _editor(config: Config, model: LoadedModel):
    from vidinv.editor import VideoEditor

    return VideoEditor(config, models=model.models)


class VidinvLoadModel:
    """Load a model for vidinv (SD 1.x / 2.x, SDXL, SD3, Flux, Wan 2.1; tiny = the built-in test model)."""

    DESCRIPTION = "Load a diffusion model for vidinv: `tiny`, a hub id, a diffusers folder or a .safetensors file."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("vidinv_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pretrained": (
                    "STRING",
                    {"default": "tiny", "tooltip": "tiny, a hub id, a diffusers folder or a file"},
                ),
                "dtype": (list(CHOICES["model.dtype"]), {"default": "auto"}),
                "device": ("STRING", {"default": "auto", "tooltip": "auto, cpu, cuda, cuda:N, mps or xpu"}),
                "frame_attention": (list(CHOICES["model.frame_attention"]), {"default": "sparse_causal"}),
            },
            "optional": {"settings": SETTINGS},
        }

    def load(self, pretrained, dtype, device, frame_attention, settings=""):
        from vidinv.editor import load_models_for

        values = {"model.pretrained": pretrained, "model.dtype": dtype, "model.device": device}
        config = with_settings(config_from_dict({}), {**values, "model.frame_attention": frame_attention}, settings)
        return (LoadedModel(load_models_for(config), config),)


class VidinvLoadVideo:
    """The selected frames of a video file or image folder, decoded as `vidinv edit` decodes them."""

    DESCRIPTION = "Read frames of a video file or an image folder (not resized: Invert Clip resizes)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": "", "tooltip": "a video file or a folder of images"}),
                "start": ("INT", {"default": 0, "min": 0, "max": 10**7}),
                "num_frames": ("INT", {"default": 16, "min": 0, "max": 10**6, "tooltip": "0: to the end"}),
                "stride": ("INT", {"default": 1, "min": 1, "max": 1000}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, path, start, num_frames, stride):
        """The file's size and time: ComfyUI reruns the node when the file changes."""
        try:
            stat = os.stat(path)
        except OSError:
            return ""
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def load(self, path, start, num_frames, stride):
        from vidinv.io.reading import FOLDER_FPS, _decode
        from vidinv.io.selection import FrameSelection

        selection = FrameSelection(start=start, num_frames=num_frames or None, stride=stride)
        source = Path(path.strip().strip('"'))
        selection.check(source)
        decoded = _decode(source, selection, "pyav", FOLDER_FPS)  # as `vidinv edit` decodes (ClipStream)
        images = torch.from_numpy(decoded.pictures.copy()).float() / 255
        return (images, float(decoded.fps / stride))


class VidinvInvert:
    """Invert a clip with its source prompt; the record feeds any number of Edit nodes."""

    DESCRIPTION = "Resize the frames and invert them with the source prompt (once: every Edit node reuses it)."
    CATEGORY = CATEGORY
    RETURN_TYPES = (RECORD,)
    RETURN_NAMES = ("record",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vidinv_model": (MODEL,),
                "images": ("IMAGE",),
                "source_prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "what the clip shows"}),
                "method": (list(INVERSION_METHODS.names()), {"default": "freeinv"}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "0: from the clip"}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "0: from the clip"}),
                "resize": (list(CHOICES["video.resize"]), {"default": "center_crop"}),
            },
            "optional": {
                "source_guidance": (
                    "FLOAT",
                    {"default": -1.0, "min": -1.0, "max": 30.0, "step": 0.1, "tooltip": "-1: the method's default"},
                ),
                "settings": SETTINGS,
            },
        }

    def invert(
        self,
        vidinv_model,
        images,
        source_prompt,
        method,
        steps,
        seed,
        height,
        width,
        resize,
        source_guidance=-1.0,
        settings="",
    ):
        values = {
            "video.num_frames": None,  # the frames given (Load Video selected them)
            "video.height": height or None,
            "video.width": width or None,
            "video.resize": resize,
            "inversion.source_prompt": source_prompt,
            "inversion.method": method,
            "inversion.steps": steps,
            "inversion.seed": seed,
            "inversion.guidance_scale": None if source_guidance < 0 else source_guidance,
        }
        config = with_settings(vidinv_model.config, values, settings)
        editor = _editor(config, vidinv_model)
        frames = editor.read(to_pictures(images)).frames
        record, _ = editor.invert(frames, callback_on_step_end=comfy_progress())
        return (InvertedClip(vidinv_model, editor.config, frames, record),)


class VidinvEdit:
    """Edit an inverted clip towards a target prompt; several Edit nodes share one record."""

    DESCRIPTION = "Edit the inverted clip towards the target prompt (Plug-and-Play, TokenFlow, FateZero, FlowEdit)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "record": (RECORD,),
                "target_prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "what the edit shows"}),
                "method": (list(EDIT_METHODS.names()), {"default": "pnp"}),
                "guidance_scale": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
            },
            "optional": {
                "negative_prompt": ("STRING", {"default": "", "multiline": True}),
                "mask": ("MASK", {"tooltip": "1 where the edit may change the clip (edit.mask); the source elsewhere"}),
                "settings": SETTINGS,
            },
        }

    def edit(self, record, target_prompt, method, guidance_scale, seed, negative_prompt="", mask=None, settings=""):
        values = {
            "edit.method": method,
            "edit.target_prompt": target_prompt,
            "edit.guidance_scale": guidance_scale,
            "edit.seed": seed,
            "edit.negative_prompt": negative_prompt,
        }
        config = with_settings(record.config, values, settings)
        editor = _editor(config, record.model)
        out = editor.edit(record.frames, record=record.record, callback_on_step_end=comfy_progress(), mask=mask)
        return (to_image(out.frames),)


class VidinvReconstruct:
    """The record regenerated with its own prompt: what the inversion keeps of the clip."""

    DESCRIPTION = "Regenerate the clip from its inversion record (judges the inversion's fidelity)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "reconstruct"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"record": (RECORD,)}}

    def reconstruct(self, record):
        editor = _editor(record.config, record.model)
        control = editor.control(record.frames) if record.config.inversion.control else None
        frames = editor.reconstruct(record.record, callback_on_step_end=comfy_progress(), control=control)
        return (to_image(frames),)


NODE_CLASS_MAPPINGS = {
    "VidinvLoadModel": VidinvLoadModel,
    "VidinvLoadVideo": VidinvLoadVideo,
    "VidinvInvert": VidinvInvert,
    "VidinvEdit": VidinvEdit,
    "VidinvReconstruct": VidinvReconstruct,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VidinvLoadModel": "vidinv Load Model",
    "VidinvLoadVideo": "vidinv Load Video",
    "VidinvInvert": "vidinv Invert Clip",
    "VidinvEdit": "vidinv Edit",
    "VidinvReconstruct": "vidinv Reconstruct",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
