"""ControlNet: loading (`model.controlnet`), condition images from the source frames (`edit.control`)
and the residuals `run_unet(..., control=...)` adds to the UNet, frame chunk by frame chunk.

    models = load_models(..., controlnet=["lllyasviel/sd-controlnet-canny"])
    control = build_control(models, frames, "canny", scale=1.0)        # frames (f, 3, H, W) in [-1, 1]
    eps = run_unet(models.unet, z, t, emb, chunk=8, control=control)

Several ControlNets add their residuals (diffusers' `MultiControlNetModel`); a ControlNet at scale
0 is not run at all, so the UNet's output is exactly the one without it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from einops import rearrange, repeat

from vidinv.config import CONTROL_KINDS, DEPTH_ESTIMATOR
from vidinv.errors import VidinvError, first_line

CANNY_THRESHOLDS = (100, 200)  # diffusers' ControlNet canny examples


def hint_channels(shapes: dict) -> tuple[int, ...] | None:
    """The conditioning embedding's channels of an original-layout (ControlLDM) ControlNet, read from
    its `input_hint_block` convolutions (0: in -> c0, then per level (c_i -> c_i), (c_i -> c_i+1));
    None when the file has none (a diffusers-layout file). `shapes`: key -> object with .shape
    (`vidinv.models.family.checkpoint_shapes`)."""
    outs = {}
    for key, tensor in shapes.items():
        head, _, param = key.removeprefix("control_model.").rpartition(".")
        if head.startswith("input_hint_block.") and param == "weight":
            outs[int(head.split(".")[1])] = tensor.shape[0]
    if not outs:
        return None
    convs = [outs[i] for i in sorted(outs)][:-1]  # the last convolution maps to the UNet's width
    return tuple(convs[0::2])


def single_file_config(path: str, unet, folder: str) -> str:
    """Write into `folder` the config.json of the ControlNet in single file `path`: `unet`'s encoder
    (`ControlNetModel.from_unet`, built on the meta device) with the file's own conditioning-embedding
    channels. Offline, and the family's shape (diffusers' default config is one SD 1.5 ControlNet's)."""
    from diffusers import ControlNetModel

    from vidinv.models.family import checkpoint_shapes

    channels = hint_channels(checkpoint_shapes(path))
    options = {} if channels is None else {"conditioning_embedding_out_channels": channels}
    with torch.device("meta"):
        ControlNetModel.from_unet(unet, load_weights_from_unet=False, **options).save_config(folder)
    return folder


def load_controlnet(source: str, dtype: torch.dtype, unet=None):
    """One ControlNetModel from a hub id (through the hub probe), a folder or a single .safetensors/.ckpt
    file (its config from `unet`, the pipeline's, when given: `single_file_config`)."""
    import tempfile

    from diffusers import ControlNetModel

    from vidinv.models.hub import hub_local_only
    from vidinv.models.paths import SINGLE_FILE_SUFFIXES, looks_like_path

    try:
        if source.endswith(SINGLE_FILE_SUFFIXES):
            if not Path(source).is_file():
                raise VidinvError(f"model.controlnet: file {source} does not exist")
            if unet is None:
                return ControlNetModel.from_single_file(source, torch_dtype=dtype)
            with tempfile.TemporaryDirectory(prefix="vidinv-controlnet-") as folder:
                config = single_file_config(source, unet, folder)
                return ControlNetModel.from_single_file(source, config=config, torch_dtype=dtype, local_files_only=True)
        # a hub id through the hub probe: one line in seconds when the hub is down and it is not cached
        local = looks_like_path(source) or hub_local_only(source, key="model.controlnet", marker="config.json")
        return ControlNetModel.from_pretrained(source, torch_dtype=dtype, local_files_only=local)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise VidinvError(f"model.controlnet: cannot load {source!r}: {first_line(err)}") from err


def load_controlnets(sources: str | list[str], dtype: torch.dtype, unet=None) -> list:
    """`model.controlnet`: one source or a list of them (single files shaped after `unet`)."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    return [load_controlnet(str(Path(s).expanduser()) if s.startswith("~") else s, dtype, unet) for s in sources]


# --- condition images ---------------------------------------------------------------------------


def _uint8_frames(frames: torch.Tensor):
    """(f, 3, H, W) in [-1, 1] -> numpy (f, H, W, 3) uint8."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def canny_images(frames: torch.Tensor, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> torch.Tensor:
    """Canny edges (OpenCV) of each frame as (f, 3, H, W) in [0, 1], as diffusers' canny ControlNets expect."""
    import cv2

    edges = [cv2.Canny(frame, *thresholds) for frame in _uint8_frames(frames)]
    return repeat(torch.from_numpy(np.stack(edges)).float() / 255, "f h w -> f c h w", c=3)


@functools.lru_cache(maxsize=2)
def load_depth_estimator(estimator: str):
    """(image processor, depth model) of transformers' depth estimation from a folder or hub id
    (loaded once per process; a hub id through the hub probe: one line in seconds when offline)."""
    from vidinv.models.hub import hub_local_only

    try:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        local = Path(estimator).expanduser().is_dir()
        options = (
            {}
            if local
            else {"local_files_only": hub_local_only(estimator, key="edit.depth_estimator", marker="config.json")}
        )
        source = str(Path(estimator).expanduser()) if local else estimator
        processor = AutoImageProcessor.from_pretrained(source, **options)
        model = AutoModelForDepthEstimation.from_pretrained(source, **options).eval()
    except VidinvError:
        raise
    except Exception as err:  # not installed, not found, not a depth model: all mean "no depth estimator here"
        raise VidinvError(
            f"edit.control: depth needs the depth estimator {estimator} (edit.depth_estimator: a transformers"
            f" depth-estimation folder or hub id): {first_line(err)}"
        ) from err
    return processor, model


def depth_images(frames: torch.Tensor, estimator: str = DEPTH_ESTIMATOR) -> torch.Tensor:
    """Depth (transformers' depth estimation) of each frame as (f, 3, H, W) in [0, 1], normalised per frame."""
    processor, model = load_depth_estimator(estimator)
    with torch.no_grad():
        inputs = processor(images=list(_uint8_frames(frames)), return_tensors="pt")
        depth = model(**inputs).predicted_depth[:, None]
    depth = torch.nn.functional.interpolate(depth, size=frames.shape[-2:], mode="bicubic", align_corners=False)
    low = depth.amin(dim=(1, 2, 3), keepdim=True)
    high = depth.amax(dim=(1, 2, 3), keepdim=True)
    depth = (depth - low) / (high - low).clamp_min(1e-8)  # per frame, as diffusers' depth examples
    return depth.expand(-1, 3, -1, -1).contiguous()


CONDITIONS = dict(zip(CONTROL_KINDS, (canny_images, depth_images)))


def condition_images(frames: torch.Tensor, kind: str, depth_estimator: str = DEPTH_ESTIMATOR) -> torch.Tensor:
    """The condition images of one kind (`edit.control`) for the source frames (f, 3, H, W) in [-1, 1]."""
    if kind not in CONDITIONS:
        raise VidinvError(f"edit.control: {kind!r} is not a condition vidinv computes (use {', '.join(CONDITIONS)})")
    return depth_images(frames, depth_estimator) if kind == "depth" else CONDITIONS[kind](frames)


# --- what run_unet adds ---------------------------------------------------------------------------


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """Condition images in [0, 1]: uint8 (as stored, 0..255) or float as given."""
    return images.float() / 255 if images.dtype == torch.uint8 else images


@dataclass(frozen=True)
class Control:
    """ControlNets with their per-frame condition images (f, 3, H, W: uint8 0..255 or float in
    [0, 1]) and scales; `transform` is FreeInv's transform of the current step (the images move with
    the latent, docs/methods.md §2) and `rows` the condition rows the ControlNets act on (None: every row)."""

    controlnets: tuple
    images: tuple[torch.Tensor, ...]
    scales: tuple[float, ...]
    transform: str = "id"
    rows: tuple[bool, ...] | None = None

    def active(self) -> list[tuple]:
        """(controlnet, images, scale) of the ControlNets with a non-zero scale."""
        return [item for item in zip(self.controlnets, self.images, self.scales) if item[2] != 0]

    def oriented(self, transform: str) -> Control:
        """The same control with the condition images seen through a FreeInv transform (by name)."""
        return self if transform == self.transform else replace(self, transform=transform)

    def for_rows(self, rows) -> Control:
        """The same control acting on the condition rows where `rows` (one bool per row) is true."""
        return replace(self, rows=tuple(bool(r) for r in rows))

    def frames(self, index) -> Control:
        """The control of a subset of the clip's frames (e.g. TokenFlow's keyframes)."""
        return replace(self, images=tuple(images[list(index)] for images in self.images))

    def _condition(self, images: torch.Tensor, frames, conditions: int, param) -> torch.Tensor:
        from vidinv import transforms

        cond = transforms.apply(self.transform, _as_float(images[frames]))
        return repeat(cond, "f c h w -> (b f) c h w", b=conditions).to(param.device, param.dtype)

    def residuals(self, sample, t, context, frames, conditions: int, added_cond_kwargs=None) -> dict:
        """UNet kwargs `down_block_additional_residuals` / `mid_block_additional_residual` for `sample`
        ((b f) c h w: `conditions` rows of the given frames); {} when no ControlNet is active. Rows
        left out by `rows` get zero residuals (the UNet adds nothing there)."""
        active = self.active()
        take = list(range(conditions)) if self.rows is None else [r for r, on in enumerate(self.rows) if on]
        if not active or not take:
            return {}
        inputs = (sample, context, *(added_cond_kwargs or {}).values())
        if len(take) < conditions:
            inputs = tuple(_rows(x, conditions, take) for x in inputs)
        x, ctx, *extra = inputs
        added = dict(zip(added_cond_kwargs, extra)) if added_cond_kwargs else None
        down, mid = None, None
        for controlnet, images, scale in active:
            param = next(controlnet.parameters())
            d, m = controlnet(
                x,
                t,
                encoder_hidden_states=ctx,
                controlnet_cond=self._condition(images, frames, len(take), param),
                conditioning_scale=float(scale),
                added_cond_kwargs=added,
                return_dict=False,
            )
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if len(take) < conditions:
            down = [_scatter_rows(r, conditions, take) for r in down]
            mid = _scatter_rows(mid, conditions, take)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def _rows(x: torch.Tensor, conditions: int, take: list[int]) -> torch.Tensor:
    """The rows `take` of a ((b f) ...) batch of `conditions` rows, as ((len(take) f) ...)."""
    per_row = rearrange(x, "(b f) ... -> b f ...", b=conditions)[take]
    return rearrange(per_row, "b f ... -> (b f) ...")


def _scatter_rows(x: torch.Tensor, conditions: int, take: list[int]) -> torch.Tensor:
    """Residuals of the rows `take` ((k f) ...) placed in a zero ((b f) ...) batch of `conditions` rows."""
    per_row = rearrange(x, "(k f) ... -> k f ...", k=len(take))
    full = per_row.new_zeros((conditions, *per_row.shape[1:]))
    full[take] = per_row
    return rearrange(full, "b f ... -> (b f) ...")


def build_control(models, frames, kinds, scale=1.0, depth_estimator: str = DEPTH_ESTIMATOR) -> Control | None:
    """The Control of `models.controlnets` for the source frames (f, 3, H, W) in [-1, 1] (or an
    iterable of such chunks, e.g. a clip stream's): `kinds` (`edit.control`: one kind or one per
    ControlNet), `scale` (`edit.controlnet_scale`: one or one per ControlNet). The condition images
    are kept as uint8 (what diffusers' pipelines feed from PIL images). None when the model has no
    ControlNet."""
    nets = list(getattr(models, "controlnets", None) or [])
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
    chunks = [frames] if isinstance(frames, torch.Tensor) else frames
    parts: list[list[torch.Tensor]] = [[] for _ in kinds]
    for chunk in chunks:
        for part, kind in zip(parts, kinds):
            part.append((condition_images(chunk, kind, depth_estimator) * 255).round().to(torch.uint8))
    images = tuple(torch.cat(part) for part in parts)
    return Control(tuple(nets), images, tuple(float(s) for s in scales))


def control_for(models, frames, config) -> Control | None:
    """The Control of a config (`edit.control`, `edit.controlnet_scale`) for the source frames."""
    ed = config.edit
    return build_control(models, frames, ed.control, ed.controlnet_scale, ed.depth_estimator)
