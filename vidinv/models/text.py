"""Prompt embeddings from the CLIP text encoder."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("vidinv")
CUT_SHOWN = 60  # characters of the dropped text shown in the note


def note_if_cut(tokenizer, prompt: str) -> None:
    """A one-line note when `prompt` has more tokens than the text encoder takes (the rest is dropped)."""
    ids = tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids
    kept = tokenizer.model_max_length - 2  # the start and end tokens take two places
    if len(ids) > kept:
        dropped = tokenizer.decode(ids[kept:])
        shown = dropped if len(dropped) <= CUT_SHOWN else dropped[:CUT_SHOWN] + "..."
        log.warning(
            "note: a prompt of %d tokens is cut to the text encoder's %d: %d dropped (%r)",
            len(ids),
            kept,
            len(ids) - kept,
            shown,
        )


@torch.no_grad()
def encode_prompts(models, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (n, l, d) for n prompts, padded to the tokenizer's max length (longer ones
    cut to it, with a note)."""
    for prompt in prompts:
        note_if_cut(models.tokenizer, prompt)
    tokens = models.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=models.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    hidden = models.text_encoder(tokens.input_ids.to(models.device))[0]
    return hidden.to(models.dtype)
