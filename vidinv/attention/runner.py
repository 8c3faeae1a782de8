"""Call the (inflated) UNet on a whole clip, in chunks of frames.

`run_unet` is the one place the UNet is called: inversion, reconstruction and editing all go
through it, so cross-frame attention and chunking apply to every method unchanged.

With frame attention installed (`install_frame_attention`), the clip is cut into passes by the
handle's `FramePattern.plan`: keys/values of frames that later passes attend to (keyframe anchors,
sparse-causal's first frame and each chunk's last frame) are cached per layer during the pass
that computes them and reused, so the chunked result equals the unchunked one while peak memory
follows the chunk. The layout is set on the handle's context for this call only.

`control` (a `vidinv.models.controlnet.Control`) runs the ControlNet(s) on the same frames as each
UNet call and passes their residuals to it.

`transform` (FreeInv's transform of the step) and `reduce` (e.g. guidance over the rows) act on
each pass: its input is transformed and its output inverted and reduced before it is written, so
neither a transformed copy of the clip nor the output of every row is ever made for the whole clip.
Transforms are permutations of each frame's entries and reductions act frame by frame, so the
result equals transforming, running and reducing the whole clip at once, bit for bit.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from einops import rearrange, repeat

from vidinv import transforms
from vidinv.attention.handle import frame_attention_of
from vidinv.chunks import frame_slices


def pass_input(z: torch.Tensor, frames: slice | list[int], rows: list[int] | None, transform: str) -> torch.Tensor:
    """The frames of one pass for every condition row (row r: clip rows[r] of z), in `transform`'s orientation."""
    part = z[:, frames] if rows is None else z[:, frames][rows]
    return transforms.apply(transform, part)


def pass_output(part: torch.Tensor, transform: str, reduce=None) -> torch.Tensor:
    """One pass's output (b n ...) back from `transform`'s orientation, reduced by `reduce`."""
    part = transforms.invert(transform, part)
    return part if reduce is None else reduce(part)


def discarded(part: torch.Tensor) -> torch.Tensor:
    """The `reduce` of a pass run only for what its hooks record: no predictions are kept."""
    return part[:, :, :0]


def _call(unet, z, t, emb, frames: slice | list[int], added_cond_kwargs, rows=None, control=None, transform="id"):
    """One UNet call on the given frames of every condition (and the ControlNets on the same frames); eps as (b f c h w)."""
    part = pass_input(z, frames, rows, transform)
    b = part.shape[0]
    sample = rearrange(part, "b f c h w -> (b f) c h w")
    f = sample.shape[0] // b
    kwargs = {}
    if added_cond_kwargs:
        kwargs["added_cond_kwargs"] = {k: repeat(v, "b ... -> (b f) ...", f=f) for k, v in added_cond_kwargs.items()}
    context = repeat(emb, "b l d -> (b f) l d", f=f)
    if control is not None:
        kwargs |= control.residuals(sample, t, context, frames, b, kwargs.get("added_cond_kwargs"))
    eps = unet(sample, t, encoder_hidden_states=context, **kwargs).sample
    return rearrange(eps, "(b f) c h w -> b f c h w", b=b)


@torch.no_grad()
def run_unet(
    unet,
    z: torch.Tensor,
    t,
    emb: torch.Tensor,
    *,
    chunk: int | None = None,
    added_cond_kwargs: dict | None = None,
    rows: list[int] | None = None,
    control=None,
    transform: str = "id",
    reduce=None,
    before_pass=None,
) -> torch.Tensor:
    """eps for latents z (b f c h w) at timestep t with text embeddings emb (b l d), as (b f c h w).

    `emb` may be a `vidinv.models.TextConditioning` (its embeddings and added conditioning).

    The b axis holds conditions (e.g. unconditional and conditional for guidance); frames of
    every condition go through the UNet together, `chunk` frames at a time (0/None = all).
    `added_cond_kwargs` (SDXL: text_embeds (b, d), time_ids (b, 6)) are repeated per frame.
    `rows`: z holds k clips (k f c h w) and condition row r runs clip rows[r] (b = len(rows)); the
    rows are gathered per chunk, so no (b f c h w) copy of the clip is made.
    `control` (`vidinv.models.controlnet.Control`): ControlNet residuals for the frames of each call.
    `transform`, `reduce`: applied per pass (module docstring); `reduce` maps (b n c h w) to (b' n c h w).
    `before_pass(index)`: called before each pass (see `run_passes`).
    """
    if hasattr(emb, "added"):  # a TextConditioning
        emb, added_cond_kwargs = emb.emb, emb.added
    b, f = (z.shape[0] if rows is None else len(rows)), z.shape[1]
    return run_passes(
        unet,
        b,
        f,
        chunk,
        lambda frames: _call(unet, z, t, emb, frames, added_cond_kwargs, rows, control, transform),
        transform=transform,
        reduce=reduce,
        before_pass=before_pass,
    )


def clip_passes(module, f: int, chunk: int | None) -> list[list[int]]:
    """The frames of each pass `run_passes` makes over a clip of f frames, in order."""
    handle = frame_attention_of(module)
    if handle is None:
        return [list(range(f))[part] for part in frame_slices(f, chunk)]
    return [list(frame_pass.frames) for frame_pass in handle.pattern.plan(f, chunk)]


def run_passes(
    module, b: int, f: int, chunk: int | None, call, *, transform: str = "id", reduce=None, before_pass=None
) -> torch.Tensor:
    """The outputs (b f ...) of `call(frames)` -> (b, len(frames), ...) over the passes of a clip of
    f frames: the module's frame-attention plan (its layout set on the handle's context for each
    pass), or plain chunks of `chunk` frames when none is installed. Each pass's output is inverted
    from `transform`'s orientation and reduced by `reduce` before it is kept (module docstring).
    `before_pass(index)` runs before pass `index` (its frames: `clip_passes(...)[index]`) with the clip in flight
    set aside (`FrameContext.suspended`), so it may run the module on other frames itself."""

    def finished(index: int, frames) -> torch.Tensor:
        if before_pass is not None:
            with nullcontext() if handle is None else handle.context.suspended():
                before_pass(index)
        return pass_output(call(frames), transform, reduce)

    handle = frame_attention_of(module)
    if handle is None:
        return torch.cat([finished(k, part) for k, part in enumerate(frame_slices(f, chunk))], dim=1)

    out = None
    with handle.clip(b, f) as context:
        for index, frame_pass in enumerate(handle.pattern.plan(f, chunk)):
            context.begin(frame_pass)
            part = finished(index, list(frame_pass.frames))
            context.end()
            if out is None:
                out = part.new_empty((part.shape[0], f) + part.shape[2:])
            out[:, list(frame_pass.frames)] = part
    return out
