"""Classifier-free guidance: the prompt rows of a UNet batch and their combination.

One rule for every caller (the inversion's model, the edit's source and edit branches): a prompt
is evaluated as the rows (uncond, cond) with guidance g, or as the cond row alone with g = 1
when g == 1 or the prompt is the unconditional prompt itself.
"""

from __future__ import annotations

import torch


def guide(pred: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """CFG over rows (uncond, cond) of a prediction (2 ...): p_u + g (p_c - p_u); one row passes as it is.

    Linear in the prediction, so it applies alike to eps, v or x0 predictions."""
    if pred.shape[0] == 1:
        return pred[0]
    uncond, cond = pred[0], pred[1]
    return torch.sub(cond, uncond).mul_(guidance_scale).add_(uncond)  # one temporary, the same arithmetic


def is_guided(prompt: str, guidance_scale: float, uncond_prompt: str = "") -> bool:
    """True when the prompt needs the (uncond, cond) pair of rows."""
    return guidance_scale != 1.0 and prompt != uncond_prompt


def prompt_rows(
    models, prompt: str, guidance_scale: float, uncond_prompt: str = "", *, size: tuple[int, int] | None = None
):
    """(rows, guidance): the text conditioning (`vidinv.models.TextConditioning`: embeddings and,
    for SDXL, the added conditioning for pictures of `size` (H, W) pixels) of the (uncond, cond) rows
    with guidance, or of the cond row alone with guidance 1 (see `is_guided`)."""
    from vidinv.models.text import encode_text, guided_text

    if is_guided(prompt, guidance_scale, uncond_prompt):
        return guided_text(models, uncond_prompt, prompt, size=size), float(guidance_scale)
    return encode_text(models, [prompt], size=size), 1.0
