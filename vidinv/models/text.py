"""Prompt embeddings from the CLIP text encoder."""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_prompts(models, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (n, l, d) for n prompts, padded to the tokenizer's max length."""
    tokens = models.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=models.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    hidden = models.text_encoder(tokens.input_ids.to(models.device))[0]
    return hidden.to(models.dtype)
