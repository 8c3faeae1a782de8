"""The denoiser as a callable: eps(z, t) for a whole clip, prompt embeddings and guidance folded in.

Samplers only ever see `eps(z, t)` with z (f c h w); this wrapper turns that into UNet calls on
the whole clip (frames as the batch, `chunk` frames per call, via `vidinv.attention.run_unet`,
so cross-frame attention processors apply unchanged) and counts UNet frame-calls.
"""

from __future__ import annotations

import torch
from einops import rearrange

from vidinv.attention import run_unet


def guide(eps: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance over rows (uncond, cond) of eps (2 ...): eps_u + g (eps_c - eps_u).

    A single row (cond only) is returned as it is.
    """
    if eps.shape[0] == 1:
        return eps[0]
    eps_uncond, eps_cond = eps[0], eps[1]
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


class Denoiser:
    """eps(z, t) = eps_u + g (eps_c - eps_u) (classifier-free guidance), or eps_c when unguided.

    cond, uncond: text embeddings (1, l, d). Guidance is skipped (one UNet pass per step) when
    `guidance_scale == 1` or no `uncond` is given. The guided combination is computed in z's dtype.
    `calls` counts UNet frame-calls (frames x conditions), the unit of the cost model.
    """

    def __init__(
        self,
        unet,
        cond: torch.Tensor,
        uncond: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        *,
        chunk: int | None = 0,
    ):
        self.unet = unet
        self.guidance_scale = float(guidance_scale)
        self.guided = uncond is not None and self.guidance_scale != 1.0
        self.emb = torch.cat([uncond, cond]) if self.guided else cond  # (b l d), b = 2 or 1
        self.chunk = chunk
        self.calls = 0

    @property
    def calls_per_step(self) -> int:
        """UNet passes per frame per eps evaluation."""
        return 2 if self.guided else 1

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        param = next(self.unet.parameters())
        x = z.to(device=param.device, dtype=param.dtype)
        b = self.emb.shape[0]
        batch = rearrange(x, "f c h w -> 1 f c h w").expand(b, *x.shape)
        eps = run_unet(self.unet, batch, t, self.emb.to(param.device), chunk=self.chunk).to(z.dtype)
        self.calls += b * z.shape[0]
        return guide(eps, self.guidance_scale)
