"""Text conditioning for every family: what the UNet needs for a list of prompts.

    text = encode_text(models, ["", "a robot"], size=(512, 512))     # rows in prompt order
    run_unet(models.unet, z, t, text.emb, added_cond_kwargs=text.added)
    rows = TextConditioning.cat([unconditional_text(models, "", size=size), text.select([1])])

SD 1.x / 2.x: the text encoder's last hidden state, `added` is None. SDXL (as
`StableDiffusionXLPipeline.encode_prompt`): the penultimate hidden states of both encoders
concatenated, the second encoder's pooled projection as `text_embeds`, and `time_ids`
(original size, crop (0, 0), target size) as `_get_add_time_ids` builds them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


@dataclass(frozen=True)
class TextConditioning:
    """Embeddings `emb` (n, l, d) and SDXL's added conditioning {"text_embeds", "time_ids"} (or None), row per prompt."""

    emb: torch.Tensor
    added: dict | None = None

    def __len__(self) -> int:
        return len(self.emb)

    def select(self, rows) -> TextConditioning:
        """The given rows (an index list or a slice), in that order."""
        rows = list(rows) if not isinstance(rows, slice) else rows
        added = None if self.added is None else {k: v[rows] for k, v in self.added.items()}
        return TextConditioning(self.emb[rows], added)

    @staticmethod
    def cat(parts) -> TextConditioning:
        """The rows of several conditionings, one after the other."""
        parts = list(parts)
        added = None if parts[0].added is None else {k: torch.cat([p.added[k] for p in parts]) for k in parts[0].added}
        return TextConditioning(torch.cat([p.emb for p in parts]), added)

    def to(self, device) -> TextConditioning:
        """The same rows on `device`."""
        added = None if self.added is None else {k: v.to(device) for k, v in self.added.items()}
        return TextConditioning(self.emb.to(device), added)

    def zeros_like(self) -> TextConditioning:
        """Zero embeddings and pooled embeddings with the same time ids (SDXL's empty negative prompt)."""
        added = (
            None if self.added is None else self.added | {"text_embeds": torch.zeros_like(self.added["text_embeds"])}
        )
        return TextConditioning(torch.zeros_like(self.emb), added)


def _tokens(tokenizer, prompts: list[str], device) -> torch.Tensor:
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return ids.to(device)


def _sdxl(models, prompts: list[str], size: tuple[int, int]) -> TextConditioning:
    hidden, pooled = [], None
    for tokenizer, encoder in ((models.tokenizer, models.text_encoder), (models.tokenizer_2, models.text_encoder_2)):
        out = encoder(_tokens(tokenizer, prompts, models.device), output_hidden_states=True)
        if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds first
            pooled = out[0]
        hidden.append(out.hidden_states[-2])
    time_ids = torch.tensor([[*size, 0, 0, *size]], dtype=models.dtype, device=models.device)
    added = {"text_embeds": pooled.to(models.dtype), "time_ids": time_ids.repeat(len(prompts), 1)}
    return TextConditioning(torch.cat(hidden, dim=-1).to(models.dtype), added)


@torch.no_grad()
def encode_text(models, prompts: list[str], *, size: tuple[int, int] | None = None) -> TextConditioning:
    """Everything the UNet needs for `prompts`, one row each; `size` (H, W) in pixels is SDXL's
    original and target size (default: the family's default size)."""
    prompts = list(prompts)
    for prompt in prompts:
        note_if_cut(models.tokenizer, prompt)
    if getattr(models, "text_encoder_2", None) is not None:
        default = models.family.size if models.family is not None else 1024
        return _sdxl(models, prompts, tuple(size) if size is not None else (default, default))
    hidden = models.text_encoder(_tokens(models.tokenizer, prompts, models.device))[0]
    return TextConditioning(hidden.to(models.dtype))


def zeroes_negative(models, negative_prompt: str) -> bool:
    """True when the negative prompt's row is zeros (SDXL's `force_zeros_for_empty_prompt`)."""
    family = getattr(models, "family", None)
    return negative_prompt == "" and family is not None and family.zero_empty_negative


def unconditional_text(models, negative_prompt: str = "", *, size: tuple[int, int] | None = None) -> TextConditioning:
    """The unconditional row of classifier-free guidance: zeros for SDXL's empty negative prompt
    (`force_zeros_for_empty_prompt`), the encoded negative prompt otherwise."""
    text = encode_text(models, [negative_prompt], size=size)
    return text.zeros_like() if zeroes_negative(models, negative_prompt) else text


def guided_text(models, negative_prompt: str, prompt: str, *, size: tuple[int, int] | None = None) -> TextConditioning:
    """The rows (uncond, cond) of classifier-free guidance, encoded in one call (the uncond row as
    `unconditional_text` makes it)."""
    text = encode_text(models, [negative_prompt, prompt], size=size)
    if zeroes_negative(models, negative_prompt):
        return TextConditioning.cat([text.select([0]).zeros_like(), text.select([1])])
    return text


def encode_prompts(models, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (n, l, d) for n prompts, padded to the tokenizer's max length (longer ones
    cut to it, with a note): `encode_text(...).emb`."""
    return encode_text(models, prompts).emb
