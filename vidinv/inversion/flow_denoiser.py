"""The flow model as a callable: v(z, t) for a whole clip, prompt rows and guidance folded in.

SD3 takes classifier-free guidance over the rows (uncond "", cond) as SD does
(`vidinv.guidance`); Flux's transformer is guidance-distilled: one cond row, the guidance scale
passed as its embedded guidance (FluxPipeline's `guidance_scale`). CogVideoX, a DDPM video DiT, is
called the same way through its adapter; its prediction is v, which the DDPM-grid samplers convert.
"""

from __future__ import annotations

import torch
from einops import repeat

from vidinv.attention.flow_runner import run_flow
from vidinv.attention.windows import latent_frame_calls
from vidinv.errors import VidinvError
from vidinv.guidance import guide, is_guided
from vidinv.models.flow import FlowCondition, flow_condition
from vidinv.models.offload import execution_device


def calls_adapter(models) -> bool:
    """Whether the model is a transformer its family's adapter calls (`Family.adapter`: the flow
    transformers, and CogVideoX, a DDPM one): its prompts are `FlowCondition`s and it runs through
    `run_flow`, whatever grid its sampler steps."""
    return getattr(getattr(models, "family", None), "adapter", None) is not None


def flow_rows(models, prompt: str, guidance_scale: float, uncond_prompt: str = "") -> tuple[FlowCondition, float]:
    """(conditions, CFG scale) of a prompt: SD3's (uncond, cond) rows with guidance or its cond row
    alone (`is_guided`); Flux's cond row with the scale embedded (`Family.guidance_embedded`: CFG scale 1)."""
    if models.family.guidance_embedded:
        return flow_condition(models, [prompt], guidance=float(guidance_scale)), 1.0
    if is_guided(prompt, guidance_scale, uncond_prompt):
        return flow_condition(models, [uncond_prompt, prompt]), float(guidance_scale)
    return flow_condition(models, [prompt]), 1.0


class FlowGuidedModel:
    """v(z, t) = v_u + g (v_c - v_u), or v_c with one row; `frame_calls` counts transformer frame-calls."""

    def __init__(self, models, cond: FlowCondition, guidance_scale: float = 1.0, *, chunk: int | None = 0):
        self.models, self.cond, self.chunk = models, cond, chunk
        self.guidance_scale = float(guidance_scale) if cond.rows == 2 else 1.0
        self.frame_calls = 0

    @classmethod
    def for_prompt(
        cls, models, prompt: str, guidance_scale: float, *, chunk: int | None = 0, size=None, control=None
    ) -> FlowGuidedModel:
        """The model for `prompt` (`size` is unused: flow models take no size conditioning)."""
        if control is not None:
            raise VidinvError("inversion.control: ControlNet is not supported on flow models (SD3, Flux)")
        cond, guidance = flow_rows(models, prompt, guidance_scale)
        return cls(models, cond, guidance, chunk=chunk)

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        transformer = self.models.transformer
        x = z.to(device=execution_device(transformer), dtype=transformer.dtype)
        batch = repeat(x, "f c h w -> b f c h w", b=self.cond.rows)
        pred = run_flow(self.models, batch, t, self.cond, chunk=self.chunk).to(z.dtype)
        self.frame_calls += self.cond.rows * latent_frame_calls(self.models, z.shape[0])  # windows: overlaps twice
        return guide(pred, self.guidance_scale)
