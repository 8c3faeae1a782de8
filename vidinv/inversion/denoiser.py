"""The model as a callable: m(z, t) for a whole clip, prompt rows and guidance folded in.

Samplers only ever see `m(z, t)` with z (f c h w) (or a stack of branches (k f c h w)); this
wrapper turns it into UNet calls on the whole clip (frames as the batch, `chunk` frames per call,
via `vidinv.attention.run_unet`, so cross-frame attention processors apply unchanged) and counts
frame-calls. It returns the model's guided prediction in the scheduler's parametrisation
(eps, v or x0: `prediction_type`); the samplers convert it to eps at the latent's own noise level.
"""

from __future__ import annotations

import torch
from einops import rearrange

from vidinv.attention import run_unet
from vidinv.guidance import guide, prompt_rows
from vidinv.models.offload import execution_device
from vidinv.models.text import TextConditioning


class ControlledCall:
    """A model callable in the orientation of FreeInv's current transform
    (`vidinv.inversion.freeinv.oriented` sets `orientation` around each transformed call): it passes
    `orientation` to its UNet calls as their per-pass `transform`, and sees its ControlNet
    conditions (`vidinv.models.controlnet.Control`, or None) in that orientation, so they move
    with the latent."""

    control = None
    orientation = "id"

    def current_control(self, rows=None):
        """The control in the current orientation, acting on the condition rows marked in `rows`."""
        if self.control is None:
            return None
        control = self.control.oriented(self.orientation)
        return control if rows is None else control.for_rows(rows)


class GuidedModel(ControlledCall):
    """m(z, t) = m_u + g (m_c - m_u) (classifier-free guidance), or m_c when unguided.

    rows: the text conditioning (`TextConditioning`, or embeddings (b l d)), b = 2 (uncond, cond)
    with guidance or 1 without; `control` adds ControlNet residuals to every row.
    `frame_calls` counts UNet frame-calls (frames x rows), the unit of the cost model.
    """

    def __init__(self, unet, rows, guidance_scale: float = 1.0, *, chunk: int | None = 0, control=None):
        text = rows if isinstance(rows, TextConditioning) else TextConditioning(rows)
        if len(text) not in (1, 2):
            raise ValueError(f"expected 1 or 2 prompt rows, got {len(text)}")
        self.unet = unet
        self.text = text
        self.guidance_scale = float(guidance_scale) if len(text) == 2 else 1.0
        self.chunk = chunk
        self.control = control
        self.frame_calls = 0

    @classmethod
    def for_prompt(
        cls, models, prompt: str, guidance_scale: float, *, chunk: int | None = 0, size=None, control=None
    ) -> GuidedModel:
        """The model for `prompt` with CFG against the empty prompt (`vidinv.guidance.prompt_rows`);
        `size` (H, W) in pixels: SDXL's size conditioning."""
        rows, guidance = prompt_rows(models, prompt, guidance_scale, size=size)
        return cls(models.unet, rows, guidance, chunk=chunk, control=control)

    @property
    def emb(self) -> torch.Tensor:
        return self.text.emb

    @property
    def rows(self) -> int:
        """UNet passes per frame per evaluation."""
        return len(self.text)

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        x = z.to(device=execution_device(self.unet), dtype=self.unet.dtype)
        batch = rearrange(x, "f c h w -> 1 f c h w").expand(self.rows, *x.shape)
        text = self.text.to(x.device)
        pred = run_unet(
            self.unet,
            batch,
            t,
            text,
            chunk=self.chunk,
            control=self.current_control(),
            transform=self.orientation,
            reduce=lambda part: guide(part.to(z.dtype), self.guidance_scale)[None],
        )
        self.frame_calls += self.rows * z.shape[0]
        return pred[0]
