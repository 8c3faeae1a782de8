"""Call the (inflated) UNet on a whole clip, in chunks of frames.

`run_unet` is the one place the UNet is called: inversion, reconstruction and editing all go
through it, so cross-frame attention and chunking apply to every method unchanged.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat

from vidinv.chunks import frame_slices


@torch.no_grad()
def run_unet(unet, z: torch.Tensor, t, emb: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """eps for latents z (b f c h w) at timestep t with text embeddings emb (b l d), as (b f c h w).

    The b axis holds conditions (e.g. unconditional and conditional for guidance); frames of
    every condition go through the UNet together, `chunk` frames at a time.
    """
    b, f = z.shape[:2]
    out = []
    for part in frame_slices(f, chunk):
        frames = part.stop - part.start
        sample = rearrange(z[:, part], "b f c h w -> (b f) c h w")
        context = repeat(emb, "b l d -> (b f) l d", f=frames)
        eps = unet(sample, t, encoder_hidden_states=context).sample
        out.append(rearrange(eps, "(b f) c h w -> b f c h w", b=b))
    return torch.cat(out, dim=1)
