"""ControlNet: loading (`model.controlnet`), condition images from the source frames (`edit.control`)
and the residuals `run_unet(..., control=...)` adds to the UNet, frame chunk by frame chunk.

    models = load_models(..., controlnet=["lllyasviel/sd-controlnet-canny"])
    control = build_control(models, frames, "canny", scale=1.0)        # frames (f, 3, H, W) in [-1, 1]
    eps = run_unet(models.unet, z, t, emb, chunk=8, control=control)

Several ControlNets add their residuals (diffusers' `MultiControlNetModel`); a ControlNet at scale
0 is not run at all, so the UNet's output is exactly the one without it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from einops import repeat

from vidinv.config import CONTROL_KINDS
from vidinv.errors import VidinvError, first_line

CANNY_THRESHOLDS = (100, 200)  # diffusers' ControlNet canny examples
DEPTH_ESTIMATOR = "Intel/dpt-hybrid-midas"  # diffusers' depth ControlNet examples


def load_controlnet(source: str, dtype: torch.dtype):
    """One ControlNetModel from a hub id, a folder or a single .safetensors/.ckpt file."""
    from diffusers import ControlNetModel

    from vidinv.models.loading import SINGLE_FILE_SUFFIXES

    try:
        if source.endswith(SINGLE_FILE_SUFFIXES):
            if not Path(source).is_file():
                raise VidinvError(f"model.controlnet: file {source} does not exist")
            return ControlNetModel.from_single_file(source, torch_dtype=dtype)
        return ControlNetModel.from_pretrained(source, torch_dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise VidinvError(f"model.controlnet: cannot load {source!r}: {first_line(err)}") from err


def load_controlnets(sources: str | list[str], dtype: torch.dtype) -> list:
    """`model.controlnet`: one source or a list of them."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    return [load_controlnet(str(Path(s).expanduser()) if s.startswith("~") else s, dtype) for s in sources]


# --- condition images ---------------------------------------------------------------------------


def _uint8_frames(frames: torch.Tensor):
    """(f, 3, H, W) in [-1, 1] -> numpy (f, H, W, 3) uint8."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def canny_images(frames: torch.Tensor, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> torch.Tensor:
    """Canny edges (OpenCV) of each frame as (f, 3, H, W) in [0, 1], as diffusers' canny ControlNets expect."""
    import cv2

    edges = [cv2.Canny(frame, *thresholds) for frame in _uint8_frames(frames)]
    return repeat(torch.from_numpy(np.stack(edges)).float() / 255, "f h w -> f c h w", c=3)


def depth_images(frames: torch.Tensor, estimator: str = DEPTH_ESTIMATOR) -> torch.Tensor:
    """Depth (transformers' depth estimation) of each frame as (f, 3, H, W) in [0, 1], normalised over the clip."""
    try:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        processor = AutoImageProcessor.from_pretrained(estimator)
        model = AutoModelForDepthEstimation.from_pretrained(estimator).eval()
    except Exception as err:  # not installed, offline, not cached: all mean "no depth estimator here"
        raise VidinvError(
            f"edit.control: depth needs the depth estimator {estimator} (transformers, network or a filled HF cache):"
            f" {first_line(err)}"
        ) from err
    with torch.no_grad():
        inputs = processor(images=list(_uint8_frames(frames)), return_tensors="pt")
        depth = model(**inputs).predicted_depth[:, None]
    depth = torch.nn.functional.interpolate(depth, size=frames.shape[-2:], mode="bicubic", align_corners=False)
    depth = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-8)
    return depth.expand(-1, 3, -1, -1).contiguous()


CONDITIONS = dict(zip(CONTROL_KINDS, (canny_images, depth_images)))


def condition_images(frames: torch.Tensor, kind: str) -> torch.Tensor:
    """The condition images of one kind (`edit.control`) for the source frames (f, 3, H, W) in [-1, 1]."""
    if kind not in CONDITIONS:
        raise VidinvError(f"edit.control: {kind!r} is not a condition vidinv computes (use {', '.join(CONDITIONS)})")
    return CONDITIONS[kind](frames)


# --- what run_unet adds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """ControlNets with their per-frame condition images (f, 3, H, W) in [0, 1] and scales."""

    controlnets: tuple
    images: tuple[torch.Tensor, ...]
    scales: tuple[float, ...]

    def active(self) -> list[tuple]:
        """(controlnet, images, scale) of the ControlNets with a non-zero scale."""
        return [item for item in zip(self.controlnets, self.images, self.scales) if item[2] != 0]

    def transformed(self, fn) -> Control:
        """The same control with `fn` applied to every condition image batch (e.g. FreeInv's
        per-step transform, which must move the condition with the latent)."""
        return replace(self, images=tuple(fn(images) for images in self.images))

    def residuals(self, sample, t, context, frames, conditions: int, added_cond_kwargs=None) -> dict:
        """UNet kwargs `down_block_additional_residuals` / `mid_block_additional_residual` for `sample`
        ((b f) c h w: `conditions` rows of the given frames); {} when no ControlNet is active."""
        down, mid = None, None
        for controlnet, images, scale in self.active():
            param = next(controlnet.parameters())
            cond = repeat(images[frames], "f c h w -> (b f) c h w", b=conditions).to(param.device, param.dtype)
            d, m = controlnet(
                sample,
                t,
                encoder_hidden_states=context,
                controlnet_cond=cond,
                conditioning_scale=float(scale),
                added_cond_kwargs=added_cond_kwargs,
                return_dict=False,
            )
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def build_control(models, frames: torch.Tensor, kinds, scale=1.0) -> Control | None:
    """The Control of `models.controlnets` for the source frames (f, 3, H, W) in [-1, 1]: `kinds`
    (`edit.control`: one kind or one per ControlNet), `scale` (`edit.controlnet_scale`: one or one
    per ControlNet). None when the model has no ControlNet."""
    nets = list(models.controlnets or [])
    if not nets:
        return None
    kinds = [kinds] if isinstance(kinds, str) or kinds is None else list(kinds)
    scales = [scale] if isinstance(scale, (int, float)) else list(scale)
    scales = scales * len(nets) if len(scales) == 1 else scales
    if len(kinds) != len(nets) or len(scales) != len(nets):
        raise VidinvError(
            f"edit.control / edit.controlnet_scale: {len(nets)} ControlNets need as many conditions and scales"
            f" (got {len(kinds)} and {len(scales)})"
        )
    images = tuple(condition_images(frames, kind) for kind in kinds)
    return Control(tuple(nets), images, tuple(float(s) for s in scales))
