"""`VidinvVideoEditPipeline`: vidinv's edit as a diffusers pipeline (`DiffusionPipeline`).

The pipeline holds a Stable Diffusion model's components (SD 1.x / 2.x, SDXL with its second
tokenizer and text encoder) and its `__call__(video, source_prompt, prompt, ...)` runs one
`VideoEditor.edit` on them: invert the clip with the source prompt, edit it towards the prompt.
It follows diffusers' conventions (`generator`, `num_inference_steps`, `guidance_scale`,
`output_type`, `callback_on_step_end`, `return_dict` with a `frames` output) and gives the
frames `vidinv edit` gives with the same settings (tests/test_pipeline.py: byte-equal videos).

Load it with `VidinvVideoEditPipeline.from_pretrained(folder)`, with
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=vidinv.pipeline.__file__,
trust_remote_code=True)` (the file `vidinv/pipeline.py` re-exports this class, so that diffusers
finds the package's own class) or with `VidinvVideoEditPipeline.from_pipe(sd_pipe)` (the same
component objects). docs/integrations.md documents it as diffusers' community pipelines are.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, SchedulerMixin, UNet2DConditionModel
from diffusers.utils import BaseOutput
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from vidinv.config import Config
from vidinv.errors import VidinvError

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
CUSTOM_PIPELINE_FILE = Path(__file__).with_name("pipeline.py")  # what `custom_pipeline=` names
VAE_TILING_ATTRS = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")


@dataclasses.dataclass
class VidinvVideoEditPipelineOutput(BaseOutput):
    """The edited video, batch first as diffusers' video pipelines return it.

    frames: `output_type` "pil": a list of one list of PIL images; "np": float32 (1, f, H, W, 3)
    in [0, 1]; "pt": float32 (1, f, 3, H, W) in [0, 1]; "latent": the edited latents (1, f, c, h, w).
    record: the inversion record (`vidinv.inversion.InversionRecord`): pass it as `record=` to
    edit the same clip again without inverting it. stats: the edit's `EditStats` as a dict
    (frame_calls, edit_s, the method's own values) and the seconds of each stage.
    """

    frames: Any
    record: Any = None
    stats: dict | None = None


def _section_dict(vidinv_config) -> dict:
    """vidinv config sections as nested dicts: from a dict, a `vidinv.Config` or a YAML file."""
    if vidinv_config is None:
        return {}
    if isinstance(vidinv_config, Config):
        return dataclasses.asdict(vidinv_config)
    if isinstance(vidinv_config, (str, Path)):
        from omegaconf import OmegaConf

        path = Path(vidinv_config)
        if not path.is_file():
            raise VidinvError(f"vidinv_config: {path} is not a file")
        return OmegaConf.to_container(OmegaConf.load(path))
    if isinstance(vidinv_config, dict):
        return copy.deepcopy(vidinv_config)
    raise VidinvError(
        f"vidinv_config must be a dict of sections, a vidinv.Config or a YAML path, got {vidinv_config!r}"
    )


def _seed_of(generator) -> int | None:
    """The seed of a torch.Generator (its `initial_seed()`); a list must hold one generator."""
    if generator is None:
        return None
    if isinstance(generator, (list, tuple)):
        if len(generator) != 1:
            raise VidinvError(f"generator: one video per call takes one generator, got {len(generator)}")
        generator = generator[0]
    return int(generator.initial_seed())


def float_frames(video, video_config) -> torch.Tensor | None:
    """Float frames (f, 3, H, W) in [-1, 1] of a float clip (diffusers' convention, values in
    [0, 1]: a torch tensor (f, 3, H, W) or (1, f, 3, H, W), a numpy array (f, H, W, 3) or
    (1, f, H, W, 3)), selected and resized as `vidinv.io.read_video` does; None for other inputs."""
    from vidinv.io.resize import center_crop, resize_frames, target_size
    from vidinv.io.selection import FrameSelection

    if isinstance(video, np.ndarray) and video.dtype != np.uint8:
        if video.ndim == 5:
            video = video[0] if len(video) == 1 else _one_video(len(video))
        if video.ndim != 4 or video.shape[-1] != 3:
            raise VidinvError(f"video: a float array must be (f, H, W, 3) in [0, 1], got {video.shape}")
        frames = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32)).permute(0, 3, 1, 2)
    elif isinstance(video, torch.Tensor):
        if video.ndim == 5:
            video = video[0] if len(video) == 1 else _one_video(len(video))
        if video.ndim != 4 or video.shape[1] != 3:
            raise VidinvError(f"video: a tensor must be (f, 3, H, W) in [0, 1], got {tuple(video.shape)}")
        frames = video.detach().float().cpu()
    else:
        return None
    frames = (frames * 2 - 1).clamp(-1, 1).contiguous()
    v = video_config
    selection = FrameSelection(start=v.start, num_frames=v.num_frames, stride=v.stride)
    selection.check("video")
    frames = frames[selection.indices(len(frames))]
    if not len(frames):
        raise VidinvError(f"video: no frames from start {v.start} (the clip has fewer)")
    size = None if v.height is None and v.width is None else (v.height, v.width)
    height, width = target_size(tuple(frames.shape[-2:]), size, "video")
    if size is None:
        return center_crop(frames, (height, width))
    return resize_frames(frames, (height, width), mode=v.resize)


def _one_video(count: int):
    raise VidinvError(f"video: one video per call, got a batch of {count}")


def postprocess(frames: torch.Tensor, latents: torch.Tensor, output_type: str):
    """The edited frames (f, 3, H, W) in [-1, 1] as diffusers' video pipelines return them (batch of one)."""
    from vidinv.io.video import frames_to_uint8

    if output_type == "latent":
        return latents[None]
    if output_type == "pil":  # the 8-bit pictures vidinv's writers write
        return [[Image.fromarray(picture) for picture in frames_to_uint8(frames)]]
    unit = ((frames.float() + 1) / 2).clamp(0, 1)
    if output_type == "pt":
        return unit[None]
    return unit.permute(0, 2, 3, 1).numpy()[None]


class VidinvVideoEditPipeline(DiffusionPipeline):
    r"""Zero-shot text-driven video editing by diffusion inversion (vidinv) as a diffusers pipeline.

    Invert a clip with a source prompt (FreeInv, MBDI, DDIM, edit-friendly DDPM), then edit it
    towards a target prompt (Plug-and-Play, TokenFlow, FateZero) with cross-frame attention on
    the UNet. One implementation of the edit: each call runs `vidinv.VideoEditor.edit` on this
    pipeline's components (the same objects, no copy); the cross-frame attention is installed on
    the UNet for the call and removed after it, so a pipeline sharing the UNet is unchanged.

    Args:
        vae, text_encoder, tokenizer, unet, scheduler: a Stable Diffusion 1.x / 2.x model's
            components (the scheduler's config gives the step table and the prediction type).
        tokenizer_2, text_encoder_2: SDXL's second tokenizer and text encoder (optional).
        force_zeros_for_empty_prompt: SDXL: an empty negative prompt is a zero embedding.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    _optional_components = ["tokenizer_2", "text_encoder_2"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        tokenizer_2: CLIPTokenizer | None = None,
        text_encoder_2: CLIPTextModelWithProjection | None = None,
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            tokenizer_2=tokenizer_2,
            text_encoder_2=text_encoder_2,
        )
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self._vidinv_models = None
        self._num_timesteps = 0
        self._guidance_scale = None

    @property
    def num_timesteps(self) -> int:
        """The edit's denoising steps in the last call (known from its first step callback on)."""
        return self._num_timesteps

    @property
    def guidance_scale(self) -> float | None:
        """The edit's classifier-free guidance scale of the current (last) call."""
        return self._guidance_scale

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' save, plus `pipeline.py` (this class's re-export) and `_class_name`
        ["pipeline", "VidinvVideoEditPipeline"] in model_index.json, the layout of a hub repo with
        a custom pipeline: `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`
        then loads this class without `custom_pipeline`."""
        super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        (folder / "pipeline.py").write_text(CUSTOM_PIPELINE_FILE.read_text(encoding="utf-8"), encoding="utf-8")
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["_class_name"] = ["pipeline", type(self).__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def _models(self):
        """vidinv's `Models` on this pipeline's components, kept while they stay the same objects on
        the same device and dtype (`runtime.offload` is applied once to them)."""
        from vidinv.models.pipe import models_from_pipe

        names = ("tokenizer", "text_encoder", "unet", "vae", "scheduler", "tokenizer_2", "text_encoder_2")
        key = tuple(id(getattr(self, name, None)) for name in names)
        param = next(self.unet.parameters())
        key += (param.device, param.dtype)
        if self._vidinv_models is None or self._vidinv_models[0] != key:
            self._vidinv_models = (key, models_from_pipe(self))
        return self._vidinv_models[1]

    def _editor(self, sections: dict):
        """A `VideoEditor` on this pipeline's components, configured by `sections`."""
        from vidinv.editor import VideoEditor, prepare_models
        from vidinv.models.pipe import dtype_name

        models = self._models()
        place = {"pretrained": models.source, "dtype": dtype_name(models.dtype), "device": str(models.device)}
        sections = {**sections, "model": {**sections.get("model", {}), **place}}
        progress = not getattr(self, "_progress_bar_config", {}).get("disable", False)
        editor = VideoEditor(sections, models=models, progress=progress)
        prepare_models(models, editor.config)
        return editor

    def check_inputs(self, output_type, callback_on_step_end_tensor_inputs):
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has to be in {self._callback_tensor_inputs}, but found {unknown}"
            )

    def _step_callback(self, callback, tensor_inputs):
        """vidinv's step callback calling diffusers' `callback(pipe, step_index, timestep,
        callback_kwargs)` after every step of the edit (denoising) stage."""
        if callback is None:
            return None
        state = {"done": 0}

        def on_step(step):
            if step.stage != "edit":
                return
            if state["done"] == 0:
                self._num_timesteps = step.total - step.index
            kwargs = {name: step.latents for name in tensor_inputs}
            timestep = torch.tensor(step.timestep if step.timestep is not None else float("nan"))
            outputs = callback(self, state["done"], timestep, kwargs)
            state["done"] += 1
            replaced = (outputs or {}).get("latents", step.latents)
            if replaced is not step.latents:
                raise VidinvError(
                    "callback_on_step_end: the edit's latents cannot be replaced (vidinv's edit loops keep "
                    "their own buffers); read them, or change the settings instead"
                )

        return on_step

    @torch.no_grad()
    def __call__(
        self,
        video=None,
        source_prompt: str | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        source_guidance_scale: float | None = None,
        inversion_method: str | None = None,
        edit_method: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        record=None,
        vidinv_config: dict | Config | str | Path | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        r"""Invert `video` with `source_prompt` and edit it towards `prompt`.

        Args:
            video: the clip: a video file or image folder path (read as `vidinv edit` reads
                `video.path`), a list of PIL images, a uint8 array (f, H, W, 3), or floats in
                [0, 1] (a tensor (f, 3, H, W), an array (f, H, W, 3), either with a batch of one).
            source_prompt: what the clip shows (`inversion.source_prompt`).
            prompt: what the edited clip should show (`edit.target_prompt`).
            negative_prompt: the edit's unconditional prompt (`edit.negative_prompt`).
            num_inference_steps: steps of the inversion and of the edit (`inversion.steps`; 50).
            guidance_scale: the edit's classifier-free guidance (`edit.guidance_scale`; 7.5).
            source_guidance_scale: the inversion's (`inversion.guidance_scale`; the method's default).
            inversion_method: `inversion.method` (freeinv, mbdi, ddim, ddpm_ef).
            edit_method: `edit.method` (pnp, tokenflow, fatezero).
            height, width, num_frames: `video.height`, `video.width`, `video.num_frames` (a clip
                given in memory keeps all its frames unless told).
            generator: its `initial_seed()` becomes `inversion.seed` and `edit.seed` (vidinv draws
                its randomness from generators it seeds itself, the same on every device).
            record: an inversion record from an earlier output (`output.record`) of the same clip
                and settings: the edit runs without inverting again.
            vidinv_config: any other settings, as `vidinv edit` takes them: a dict of config
                sections ({"edit": {"pnp": {"feature_steps": 0.6}}, "runtime": {"unet_chunk": 4}}),
                a `vidinv.Config` or a YAML config file; the arguments above take precedence.
            output_type: "pil" (default), "np", "pt" or "latent".
            return_dict: a `VidinvVideoEditPipelineOutput` (True) or the tuple (frames,).
            callback_on_step_end: `callback(pipe, step_index, timestep, callback_kwargs)` after
                every edit step (`step_index` from 0, `pipe.num_timesteps` steps); it reads the
                latents (`callback_kwargs["latents"]`) and returns the dict unchanged.
            callback_on_step_end_tensor_inputs: the tensors in callback_kwargs: ["latents"].
        """
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        self.check_inputs(output_type, tensor_inputs)
        if video is None:
            raise VidinvError("video: give the clip (a path, PIL images, or an array / tensor of frames)")
        sections = _section_dict(vidinv_config)
        in_memory = not isinstance(video, (str, Path))
        if in_memory and num_frames is None and "num_frames" not in sections.get("video", {}):
            sections.setdefault("video", {})["num_frames"] = None  # all the frames given
        seed = _seed_of(generator)
        given = {
            ("inversion", "source_prompt"): source_prompt,
            ("edit", "target_prompt"): prompt,
            ("edit", "negative_prompt"): negative_prompt,
            ("inversion", "steps"): num_inference_steps,
            ("edit", "guidance_scale"): guidance_scale,
            ("inversion", "guidance_scale"): source_guidance_scale,
            ("inversion", "method"): inversion_method,
            ("edit", "method"): edit_method,
            ("video", "height"): height,
            ("video", "width"): width,
            ("video", "num_frames"): num_frames,
            ("inversion", "seed"): seed,
            ("edit", "seed"): seed,
        }
        for (section, key), value in given.items():
            if value is not None:
                sections.setdefault(section, {})[key] = value

        had_attention = self._frame_attention_installed()
        tiling = {name: getattr(self.vae, name) for name in VAE_TILING_ATTRS if hasattr(self.vae, name)}
        try:
            editor = self._editor(sections)
            self._guidance_scale = editor.config.edit.guidance_scale
            self._num_timesteps = 0
            frames = float_frames(video, editor.config.video)
            if frames is None:
                frames = editor.read(video if in_memory else str(video)).frames
            out = editor.edit(
                frames,
                record=record,
                callback_on_step_end=self._step_callback(callback_on_step_end, tensor_inputs),
            )
        finally:
            if not had_attention:
                from vidinv.attention.handle import remove_frame_attention

                remove_frame_attention(self.unet)
            for name, value in tiling.items():
                setattr(self.vae, name, value)
        stats = {**out.stats.to_dict(), "seconds": dict(out.seconds)} if out.stats is not None else None
        result = postprocess(out.frames, out.latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return VidinvVideoEditPipelineOutput(frames=result, record=out.record, stats=stats)

    def _frame_attention_installed(self) -> bool:
        from vidinv.attention.handle import frame_attention_of

        return frame_attention_of(self.unet) is not None


__all__ = ["VidinvVideoEditPipeline", "VidinvVideoEditPipelineOutput"]
