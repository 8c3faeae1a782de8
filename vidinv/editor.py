"""`VideoEditor`: the Python API. Invert, reconstruct and edit clips in memory; the disk only when asked.

from vidinv import VideoEditor

editor = VideoEditor.from_pretrained("tiny", inversion={"steps": 20})
clip = editor.read("samples/bikes.mp4")
out = editor.edit(clip.frames, "a robot riding a bike", source_prompt="a man riding a bike")
out.frames        # (f, 3, H, W) in [-1, 1], float32 on the CPU
out.record        # the inversion record (reusable: editor.edit(..., record=out.record))
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vidinv.callbacks import step_callback
from vidinv.config import Config, config_from_dict, validate

if TYPE_CHECKING:
    from vidinv.editing.methods import EditStats


def load_models_for(config: Config):
    """The configured model: cross-frame attention on its UNet, VAE tiling and CPU offload as configured."""
    from vidinv.models import models_from_config

    models = models_from_config(config.model, offload=config.runtime.offload)
    return prepare_models(models, config)


def prepare_models(models, config: Config):
    """`models` made ready as configured (in place): cross-frame attention on the denoiser, a video
    transformer's temporal windows (runtime.window), VAE tiling, offload."""
    from vidinv.attention.inflate import install_from_config
    from vidinv.attention.windows import set_windows
    from vidinv.models.offload import apply_offload
    from vidinv.models.vae import set_vae_tiling

    rt = config.runtime
    if config.model.lora is not None and not getattr(models, "loras", None):
        from vidinv.errors import VidinvError

        raise VidinvError(
            "model.lora: these models were loaded without it (a pipeline's or given models are used as they"
            " are): load the LoRA into the pipeline first (pipe.load_lora_weights), or let vidinv load the model"
        )
    install_from_config(models.denoiser, config.model)
    set_windows(models, rt)
    set_vae_tiling(models.vae, rt.vae_tile_size if rt.vae_tiling else None)
    apply_offload(models, rt.offload)
    return models


def load_clip(config: Config, source=None):
    """The clip as configured: an object with .frames (f, 3, H, W) in [-1, 1] and .fps. `source`:
    the clip itself instead of video.path (a uint8 array (f, H, W, 3) or a list of PIL images)."""
    from vidinv.io import read_video

    v = config.video
    size = None if v.height is None and v.width is None else (v.height, v.width)
    source = v.path if source is None else source
    return read_video(source, start=v.start, num_frames=v.num_frames, stride=v.stride, size=size, resize=v.resize)


@dataclass
class EditOutput:
    """An edited clip, the record it came from, and what each stage cost."""

    frames: torch.Tensor | None  # (f, 3, H, W) in [-1, 1]; None from `edit_latents`
    latents: torch.Tensor  # (f, c, h, w) edited latents
    record: object  # InversionRecord
    record_reused: bool = False
    seconds: dict = field(default_factory=dict)
    stats: EditStats | None = None  # what the edit method reports (frame_calls, edit_s, its own in extra)
    peak_memory: dict = field(default_factory=dict)  # MB after the inversion, the edit (and the decode)
    mask: object = None  # the edit's mask (`vidinv.editing.masks.EditMask`: edit.mask / mask_words), or None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_mb`: the CUDA allocator's, else (Linux) the process's peak
    resident size, so that each batch item and app request reports its own peak, not an earlier one."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    except OSError:  # not Linux: the peak stays the process's
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since `reset_peak_memory` (else since the process started): the CUDA allocator's
    peak on CUDA, the process's peak resident size (VmHWM) elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class VideoEditor:
    """One model and one config; every method takes tensors and returns tensors or records."""

    def __init__(self, config: Config | dict | None = None, *, models=None, progress: bool = False):
        if isinstance(config, Config):
            config = copy.deepcopy(config)
            validate(config)
        else:
            config = config_from_dict(config)
        self.config = config
        self._models = models
        self.progress = progress

    @classmethod
    def from_pretrained(cls, pretrained: str = "tiny", *, progress: bool = False, **sections) -> VideoEditor:
        """An editor for `pretrained` (tiny, hub id, folder or single file); `sections` are config
        sections as dicts, e.g. inversion={"method": "ddpm_ef"}, runtime={"unet_chunk": 8}."""
        model = {**sections.pop("model", {}), "pretrained": pretrained}
        return cls({"model": model, **sections}, progress=progress)

    @classmethod
    def from_pipe(cls, pipe, *, progress: bool = False, **sections) -> VideoEditor:
        """An editor on the components of a loaded diffusers Stable Diffusion pipeline: the same
        tokenizer, text encoder, UNet, VAE and scheduler objects (no second copy in memory), on
        the UNet's device and dtype. The configured cross-frame attention is installed on the
        pipeline's UNet (`vidinv.attention.remove_frame_attention(pipe.unet)` restores it)."""
        from vidinv.models.pipe import dtype_name, models_from_pipe

        models = models_from_pipe(pipe)
        place = {"pretrained": models.source, "dtype": dtype_name(models.dtype), "device": str(models.device)}
        editor = cls({"model": {**sections.pop("model", {}), **place}, **sections}, progress=progress)
        editor._models = prepare_models(models, editor.config)
        return editor

    @property
    def models(self):
        """The loaded model with the configured frame attention installed (loaded on first use)."""
        if self._models is None:
            self._models = load_models_for(self.config)
        else:  # given models (or shared with another editor) run in this config's temporal windows
            from vidinv.attention.windows import set_windows

            set_windows(self._models, self.config.runtime, note=False)
        return self._models

    def _with(self, **changes) -> Config:
        """A copy of the config with `section_key=value` changes (None values are left out)."""
        config = copy.deepcopy(self.config)
        for key, value in changes.items():
            if value is not None:
                section, name = key.split("__")
                setattr(getattr(config, section), name, value)
        validate(config)
        return config

    def read(
        self,
        video=None,
        *,
        start: int | None = None,
        num_frames: int | None = None,
        stride: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ):
        """The clip `video`: a path (default video.path), a uint8 array (f, H, W, 3) or a list of
        PIL images; frames and size as configured unless given. Returns .frames (f, 3, H, W) in
        [-1, 1] and .fps (8 for an in-memory clip)."""
        changes = dict(start=start, num_frames=num_frames, stride=stride, height=height, width=width)
        changes = {f"video__{k}": v for k, v in changes.items()}
        if video is None or isinstance(video, (str, Path)):
            return load_clip(self._with(video__path=None if video is None else str(video), **changes))
        return load_clip(self._with(**changes), video)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        from vidinv.models import encode_frames

        return encode_frames(self.models.vae, frames, self.config.runtime.vae_chunk, progress=self.progress)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        from vidinv.models import decode_latents

        return decode_latents(self.models.vae, latents, self.config.runtime.vae_chunk, progress=self.progress)

    def control(self, frames) -> object | None:
        """The ControlNet conditions (`vidinv.models.controlnet.Control`) of the source frames
        (f, 3, H, W) in [-1, 1], or an iterable of such chunks; None without `model.controlnet`."""
        from vidinv.models.controlnet import control_for

        return control_for(self.models, frames, self.config)

    def invert(
        self,
        frames: torch.Tensor,
        *,
        source_prompt: str | None = None,
        record_dir: str | Path | None = None,
        captures=(),
        callback_on_step_end=None,
    ) -> tuple[object, bool]:
        """(record, reused): invert the frames with the source prompt; with `record_dir`, a matching
        record there is reused and a new one is saved there. `captures`: what an edit method asks
        the inversion to capture (`vidinv.editing.Capture`). `callback_on_step_end(step)` after
        every inversion step (a `vidinv.Step` of stage "inversion", latents None)."""
        control = self.control(frames) if self.config.inversion.control else None
        return self.invert_latents(
            self.encode(frames),
            source_prompt=source_prompt,
            record_dir=record_dir,
            captures=captures,
            callback_on_step_end=callback_on_step_end,
            control=control,
        )

    def invert_latents(
        self,
        latents: torch.Tensor,
        *,
        source_prompt: str | None = None,
        record_dir: str | Path | None = None,
        captures=(),
        control=None,
        callback_on_step_end=None,
    ) -> tuple[object, bool]:
        """`invert` for latents already encoded (f, c, h, w); `control`: the clip's ControlNet
        conditions (`control(frames)`), needed with `inversion.control`."""
        from vidinv.inversion import invert, invert_or_load

        config = self._with(inversion__source_prompt=source_prompt)
        options = dict(
            progress=self.progress,
            captures=captures,
            callback=step_callback(callback_on_step_end),
            control=control,
        )
        if record_dir is None:
            return invert(self.models, latents, config, **options), False
        return invert_or_load(self.models, latents, config, record_dir, **options)

    def reconstruct(self, record, *, callback_on_step_end=None, control=None) -> torch.Tensor:
        """The frames regenerated from the record with its own prompt and guidance;
        `callback_on_step_end(step)` after every step (a `vidinv.Step` of stage "reconstruction");
        `control`: the clip's ControlNet conditions, for a record inverted with them."""
        from vidinv.inversion import reconstruct

        callback = step_callback(callback_on_step_end)
        return self.decode(
            reconstruct(self.models, record, self.config, progress=self.progress, callback=callback, control=control)
        )

    def edit(
        self,
        frames: torch.Tensor,
        target_prompt: str | None = None,
        *,
        source_prompt: str | None = None,
        record=None,
        record_dir: str | Path | None = None,
        callback_on_step_end=None,
        mask=None,
    ) -> EditOutput:
        """Edit the clip towards `target_prompt` (default edit.target_prompt), keeping its structure.

        `record` skips the inversion (it must come from these frames); `record_dir` reuses or
        saves the inversion record on disk. `callback_on_step_end(step)` is called after every
        step with a `vidinv.Step` (stage, index, total, timestep, latents): stage "inversion"
        (latents None; only when the inversion runs), then "edit" (the edit branch's latents after
        step `index` of `total`). A callable of four parameters gets (stage, index, total, latents),
        the form before `Step`. `mask`: the region the edit may change, a tensor (frames, H, W) or
        (H, W) in [0, 1] (1 = may change; resized to the frames), instead of the file `edit.mask`
        (docs/methods.md §8).
        """
        reset_peak_memory(self.models.device)
        t0 = time.perf_counter()
        latents = None if record is not None else self.encode(frames)
        encode_s = round(time.perf_counter() - t0, 4)
        out = self.edit_latents(
            latents,
            target_prompt,
            source_prompt=source_prompt,
            record=record,
            record_dir=record_dir,
            callback_on_step_end=callback_on_step_end,
            control=self.control(frames),
            release_latents=True,  # encoded here: nobody else holds them
            mask=mask,
        )
        if record is None:
            out.seconds = {"encode": encode_s, **out.seconds}
        t0 = time.perf_counter()
        edited = self.decode(out.latents)
        out.seconds["decode"] = round(time.perf_counter() - t0, 4)
        out.peak_memory["after_decode_mb"] = round(peak_memory_mb(self.models.device), 1)
        out.frames = edited
        return out

    def edit_latents(
        self,
        latents: torch.Tensor | None,
        target_prompt: str | None = None,
        *,
        source_prompt: str | None = None,
        record=None,
        record_dir: str | Path | None = None,
        callback_on_step_end=None,
        control=None,
        release_latents: bool = False,
        mask=None,
    ) -> EditOutput:
        """`edit` for latents already encoded (f, c, h, w); the result's .frames is None (decode it
        with `decode`, or chunk by chunk as the edit job does). `control`: the clip's ControlNet
        conditions (`control(frames)`), required with `model.controlnet`. `release_latents`: free
        the storage of `latents` (it becomes empty) once the inversion's record holds the clip, so
        that it is not held beside the edit (the edit job's memory: 16 KB per frame at 256x256).
        `mask`: as `edit`'s (a pixel mask of the clip's frames); None: `edit.mask` read from its file
        (fitted to the frames of these latents) or `edit.mask_words`, checked here, before the inversion."""
        from vidinv.editing import get_edit_method
        from vidinv.editing.methods import check_model_kind
        from vidinv.errors import VidinvError, check_finite

        config = self._with(edit__target_prompt=target_prompt, inversion__source_prompt=source_prompt)
        method = get_edit_method(config.edit.method)(self.models, config)
        check_model_kind(method, self.models)
        if getattr(self.models, "controlnets", None) and control is None:
            raise VidinvError("model.controlnet: the edit needs the ControlNet conditions of the source frames")
        if control is not None and not method.uses_control:
            raise VidinvError(f"model.controlnet: edit.method {config.edit.method!r} does not apply ControlNet")
        method.control = control
        method.mask = self._mask(method, config, mask, latents, record)
        method.check()  # errors in the edit's settings before the inversion
        device = self.models.device
        seconds, reused = {}, record is not None
        if record is None:
            record = method.source_record(latents)  # inversion-free methods (FlowEdit)
        if record is None:
            captures = method.captures(tuple(latents.shape))
            t0 = time.perf_counter()
            record, reused = self.invert_latents(
                latents,
                source_prompt=config.inversion.source_prompt,
                record_dir=record_dir,
                captures=captures,
                control=control,
                callback_on_step_end=callback_on_step_end,
            )
            seconds["inversion"] = round(time.perf_counter() - t0, 4)
            if release_latents and record.latents is not latents:
                latents.set_()  # the record's latents[0] is the clip now (a view of it keeps its storage alive)
        memory = {"after_inversion_mb": round(peak_memory_mb(device), 1)}
        from vidinv.attention.windows import window_progress

        t0 = time.perf_counter()
        with window_progress(self.progress):  # a video model's windows: a bar per call (runtime.window)
            result = method.edit(record, progress=self.progress, callback=step_callback(callback_on_step_end))
        check_finite(result.latents, "edit", self.models.dtype)
        measured = round(time.perf_counter() - t0, 4)
        seconds["edit"] = measured if result.stats.edit_s is None else result.stats.edit_s
        memory["after_edit_mb"] = round(peak_memory_mb(device), 1)
        return EditOutput(None, result.latents, record, reused, seconds, result.stats, memory, method.mask)

    def _mask(self, method, config: Config, mask, latents: torch.Tensor | None, record):
        """The edit's `EditMask` (None without one), checked before the inversion: `mask` (a pixel
        mask), or edit.mask's file fitted to the frames of the latents, or edit.mask_words."""
        from vidinv.editing.masks import edit_mask, pixel_frames
        from vidinv.errors import VidinvError
        from vidinv.io.masks import read_mask
        from vidinv.models.causal_vae import temporal_factor
        from vidinv.models.vae import scale_factor

        ed = config.edit
        if mask is None and ed.mask is None and not ed.mask_words:
            return None
        if not method.masks:
            raise VidinvError(f"edit.mask: edit.method {config.edit.method!r} does not confine its edit to a mask")
        shape = tuple(latents.shape) if latents is not None else tuple(record.latents.shape[1:])
        origin = "edit.mask" if ed.mask is not None else "mask"  # the file (read by the job or here), or a tensor
        if mask is None and ed.mask is not None:
            factor = scale_factor(self.models.vae)
            mask = read_mask(ed.mask, config.video, size=(shape[-2] * factor, shape[-1] * factor))
            per_latent = temporal_factor(self.models.vae.config) if getattr(self.models, "video", False) else 1
            frames = pixel_frames(shape[0], per_latent)
            mask = mask[:frames] if len(mask) > frames else mask  # a mask video longer than the clip
        prompt = record.source_prompt if record is not None else config.inversion.source_prompt
        return edit_mask(self.models, config, mask, shape, prompt, origin)
