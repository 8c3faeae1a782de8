"""Call an SD3 / Flux transformer on a whole clip, in chunks of frames (the flow models' `run_unet`).

Frames of every condition row go through the transformer together, `chunk` frames at a time, in
the passes of the installed frame-attention plan (`vidinv.attention.runner.run_passes`), so
cross-frame joint attention (`vidinv.attention.joint`) and its K/V cache apply unchanged. A native
video model (Wan: `models.video`) attends over the whole latent clip itself: it is called on every
frame at once, so `chunk` does not apply to it, or, with `models.windows` (`runtime.window`), window by
window over the latent frames, the windows' outputs blended with ramps (`vidinv.attention.windows`).
"""

from __future__ import annotations

import torch
from einops import rearrange

from vidinv.attention.handle import frame_attention_of
from vidinv.attention.runner import pass_input, pass_output, run_passes
from vidinv.attention.windows import windows_of


@torch.no_grad()
def run_flow(
    models,
    z: torch.Tensor,
    t,
    cond,
    *,
    chunk: int | None = None,
    rows: list[int] | None = None,
    transform: str = "id",
    reduce=None,
) -> torch.Tensor:
    """Velocities (b f c h w) for latents z (b f c h w) at timestep t (0..1000) under the prompt rows
    `cond` (a `vidinv.models.flow.FlowCondition` of b rows). `rows`: z holds k clips and condition
    row r runs clip rows[r]; `transform`, `reduce` act per pass; all as in `run_unet`."""
    transformer = models.transformer
    if getattr(models, "video", False):  # a video transformer: the clip is one pass, or one per window

        def window(frames: slice) -> torch.Tensor:
            clip = pass_input(z, frames, rows, transform)
            return pass_output(models.call(transformer, clip, t, cond), transform, reduce)

        windows = windows_of(models)
        return window(slice(None)) if windows is None else windows.run(window, z.shape[1])
    b, f = (z.shape[0] if rows is None else len(rows)), z.shape[1]
    handle = frame_attention_of(transformer)
    if handle is not None:
        handle.context.text_tokens = cond.embeds.shape[1]  # Flux's single-stream blocks split by it

    def call(frames):
        part = pass_input(z, frames, rows, transform)
        n = part.shape[1]
        x = rearrange(part, "b f c h w -> (b f) c h w")
        v = models.call(transformer, x, t, cond.per_frame(n))
        return rearrange(v, "(b f) c h w -> b f c h w", b=b)

    return run_passes(transformer, b, f, chunk, call, transform=transform, reduce=reduce)
