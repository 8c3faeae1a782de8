"""Edits confined to a mask, for every edit method (docs/methods.md §8).

The mask lives on the latent grid, (f, 1, h, w) in [0, 1], 1 = the edit may change the cell:

- `edit.mask` (a file, `vidinv.io.masks.read_mask`; or a tensor, e.g. ComfyUI's MASK): the pixel mask
  area-averaged over each latent cell (8 x 8 pixels); on a video model (Wan) a latent frame takes
  the largest value of the frames it stands for (frame 0; then 4 frames each);
- `edit.mask_words`: per step, from the source branch's conditional row in that step's model calls:
  the image queries' attention on the words' tokens, averaged over heads and tokens and summed over
  the probed layers at the latent grid (UNet: the cross-attention layers of FateZero's store; SD3 /
  Flux: every joint attention layer, the image queries' softmax over the text tokens; Wan: every
  cross-attention layer), seen back through FreeInv's transform of the call, normalised by each
  frame's maximum and thresholded at `edit.mask_words_threshold` (FateZero's blend mask);

then grown by `edit.mask_dilate` cells (a square max filter) and given a linear ramp from 1 to 0
over `edit.mask_feather` cells outside it (`shape_mask`). An inversion-based method blends after
every step, z_edit <- m z_edit + (1 - m) z_source (`MaskedSource`); FlowEdit masks its velocity
difference (`vidinv.editing.flowedit`). m = 0 gives the source exactly, m = 1 the unmasked edit.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vidinv import transforms
from vidinv.attention.processors import AttentionHook
from vidinv.attention.windows import current_window
from vidinv.errors import VidinvError

WAN_TEXT_TOKENS = 512  # Wan's text context (diffusers' WanAttnProcessor: image context before it, I2V)
QUERY_CHUNK = 4096  # Wan: image queries whose text-token scores are computed at once


def grid_of(tokens: int, h: int, w: int) -> tuple[int, int]:
    """The (rows, cols) of a layer with `tokens` query tokens for an h x w latent."""
    scale = math.sqrt(h * w / tokens)
    return round(h / scale), round(w / scale)


def token_grid(a: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Per-query-token values (q, n) of a layer as (q, h, w) at the latent size (bilinear)."""
    h, w = latent_size
    rows, cols = grid_of(a.shape[-1], h, w)
    a = a.float().reshape(len(a), 1, rows, cols)
    return F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def threshold_mask(total: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary blend mask from the summed blend maps (f, h, w): normalised per frame, thresholded."""
    total = total / total.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return (total > threshold).float()


def tokenizer_positions(tokenizer, prompt: str, words: list[str], max_length: int, key: str) -> list[int]:
    """Token positions of each word (all its tokens, every occurrence) in the prompt as `tokenizer`
    pads it to `max_length` tokens; a word that is not there is a one-line error naming `key`."""
    ids = tokenizer(prompt, padding="max_length", max_length=max_length, truncation=True).input_ids
    positions = []
    for word in words:
        piece = tokenizer(word, add_special_tokens=False).input_ids
        found = [s for s in range(len(ids) - len(piece) + 1) if piece and ids[s : s + len(piece)] == piece]
        if not found:
            raise VidinvError(
                f"{key}: {word!r} is not in the source prompt {prompt!r} "
                "(the mask comes from the source's attention on its words)"
            )
        positions += [s + k for s in found for k in range(len(piece))]
    return sorted(set(positions))


def mask_word_tokens(models, prompt: str, words: list[str], key: str = "edit.mask_words") -> list[int]:
    """Positions of `words` in the text sequence the model attends to: the CLIP tokens of a UNet;
    SD3's CLIP tokens then (with T5) its T5 tokens; Flux's and Wan's T5 tokens."""
    pipeline = getattr(models, "pipeline", None)
    if pipeline is None:  # a UNet: the prompt's CLIP tokens
        return tokenizer_positions(models.tokenizer, prompt, words, models.tokenizer.model_max_length, key)
    family, tokens = models.family, models.max_sequence_length
    clip = family.extra_text_tokens  # CLIP's tokens before T5's (SD3)
    found = tokenizer_positions(pipeline.tokenizer, prompt, words, clip, key) if clip else []
    t5_encoder = family.t5_tokenizer.replace("tokenizer", "text_encoder")
    if getattr(pipeline, t5_encoder, None) is not None:  # SD3 may load without T5
        t5 = getattr(pipeline, family.t5_tokenizer)
        found += [clip + p for p in tokenizer_positions(t5, prompt, words, tokens, key)]
    return found


def shape_mask(m: torch.Tensor, dilate: int = 0, feather: int = 0) -> torch.Tensor:
    """m (f, 1, h, w) grown by `dilate` cells (a (2 dilate + 1)^2 max filter), then a linear ramp
    outside it: a cell at Chebyshev distance k <= feather from it gets (1 - k / (feather + 1)) x its value."""
    if dilate > 0:
        m = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
    if feather > 0:
        out = m
        for k in range(1, feather + 1):
            ring = F.max_pool2d(m, 2 * k + 1, stride=1, padding=k) * (1 - k / (feather + 1))
            out = torch.maximum(out, ring)
        m = out
    return m


def latent_from_pixels(pixels: torch.Tensor, frames: int, latent_size: tuple[int, int], per_latent: int = 1):
    """A pixel mask (n, H, W) in [0, 1] (n = 1 or the clip's frames) -> (frames, 1, h, w): each latent
    cell the mean of its pixels; a latent frame of a video model (`per_latent` frames each after the
    first) the largest value of its frames."""
    h, w = latent_size
    m = pixels.float()[:, None]
    m = F.avg_pool2d(m, (m.shape[-2] // h, m.shape[-1] // w))
    if len(m) == 1:
        return m.expand(frames, -1, -1, -1).clone()
    if per_latent > 1:
        groups = [m[:1]] + [m[1 + per_latent * j : 1 + per_latent * (j + 1)] for j in range(frames - 1)]
        m = torch.cat([g.amax(dim=0, keepdim=True) for g in groups])
    return m


def pixel_frames(latent_frames: int, per_latent: int) -> int:
    """Frames of a clip of `latent_frames` latent frames (a video model's: 1 + per_latent x (f - 1))."""
    return 1 + per_latent * (latent_frames - 1) if per_latent > 1 else latent_frames


@dataclass
class EditMask:
    """The edit's mask on the latent grid (module docstring): `fixed` (f, 1, h, w) for a file's or a
    tensor's, or `tokens` (mask_words' positions) for one made at every step by `set_words`."""

    frames: int  # latent frames
    latent_size: tuple[int, int]
    origin: str  # "edit.mask", "mask" (a tensor) or "edit.mask_words"
    fixed: torch.Tensor | None = None
    tokens: list[int] | None = None
    threshold: float = 0.3
    dilate: int = 0
    feather: int = 0
    per_latent: int = 1  # frames a latent frame stands for (Wan: 4)
    current: torch.Tensor | None = field(default=None, init=False)  # the mask of the step in flight
    touched: torch.Tensor | None = field(default=None, init=False)  # bool (f, h, w): m > 0 at any step
    _fractions: list = field(default_factory=list, init=False)

    def __post_init__(self):
        if self.fixed is not None:
            self.current = shape_mask(self.fixed.float(), self.dilate, self.feather)

    @property
    def words(self) -> bool:
        return self.tokens is not None

    def set_words(self, total: torch.Tensor | None) -> None:
        """The step's mask from the summed word maps (f, h, w) of its source call (`WordMaps.total`)."""
        if total is None:
            raise VidinvError("edit.mask_words: no attention map was recorded in the source branch's call")
        self.current = shape_mask(threshold_mask(total, self.threshold)[:, None], self.dilate, self.feather)

    def weights(self, like: torch.Tensor) -> torch.Tensor:
        """The current mask (f, 1, h, w) on `like`'s device and dtype; marks what it lets change (on
        the device: nothing is read back before `describe` / `edited_pixels`)."""
        m = self.current.to(device=like.device, dtype=like.dtype)
        touched = m[:, 0] > 0
        self.touched = touched if self.touched is None else self.touched | touched
        self._fractions.append(m.float().mean())
        return m

    def blend(self, z_edit: torch.Tensor, z_source: torch.Tensor) -> torch.Tensor:
        """m z_edit + (1 - m) z_source for latents (f, c, h, w)."""
        m = self.weights(z_edit)
        return m * z_edit + (1 - m) * z_source.to(device=z_edit.device, dtype=z_edit.dtype)

    def edited_pixels(self, frames: int, size: tuple[int, int]) -> np.ndarray | None:
        """bool (frames, H, W): True where a latent cell was let change at some step (the edit's
        region of `ClipComparison`'s unedited metrics); None before any step."""
        if self.touched is None:
            return None
        t = self.touched.cpu().float()[:, None]
        t = F.interpolate(t, size=tuple(size), mode="nearest")[:, 0] > 0
        latent = [0] + [1 + (p - 1) // self.per_latent for p in range(1, frames)]  # pixel frame -> latent frame
        return t[latent].numpy() if self.per_latent > 1 else t.numpy()

    def describe(self) -> dict:
        """metrics.json's "mask" entry of the edit."""
        fractions = self._fractions
        fraction = round(float(torch.stack(fractions).double().mean()), 4) if fractions else None
        return {
            "origin": self.origin,
            "dilate": self.dilate,
            "feather": self.feather,
            **({"threshold": self.threshold} if self.words else {}),
            "mean_fraction": fraction,  # mean of the mask over cells and steps
        }


def edit_mask(models, config, pixels, latent_shape: tuple[int, ...], prompt: str, origin: str = "edit.mask"):
    """The EditMask of a run (None without a mask): from `pixels` (a pixel mask (n, H, W) or (H, W)
    in [0, 1], any size: `vidinv.io.masks.tensor_mask`) or `edit.mask_words` (their tokens in
    `prompt`: a one-line error when one is missing), for latents of `latent_shape` (f, c, h, w).
    Called before the inversion."""
    from vidinv.io.masks import check_mask_frames, tensor_mask
    from vidinv.models.causal_vae import temporal_factor
    from vidinv.models.vae import scale_factor

    ed = config.edit
    if pixels is None and not ed.mask_words:
        return None
    if pixels is not None and ed.mask_words:
        raise VidinvError(f"edit.mask_words: {list(ed.mask_words)} with a {origin} too: give one mask, a file or words")
    f, _, h, w = latent_shape
    per_latent = temporal_factor(models.vae.config) if getattr(models, "video", False) else 1
    shaping = dict(dilate=ed.mask_dilate, feather=ed.mask_feather, per_latent=per_latent)
    if pixels is None:
        tokens = mask_word_tokens(models, prompt, list(ed.mask_words))
        return EditMask(f, (h, w), "edit.mask_words", tokens=tokens, threshold=ed.mask_words_threshold, **shaping)
    factor = scale_factor(models.vae)
    pixels = tensor_mask(pixels, (h * factor, w * factor), pixel_frames(f, per_latent), origin)
    check_mask_frames(pixels, pixel_frames(f, per_latent), origin)
    return EditMask(f, (h, w), origin, fixed=latent_from_pixels(pixels, f, (h, w), per_latent), **shaping)


class WordMaps(AttentionHook):
    """Sums one row's attention on the mask words' tokens per frame over the probed layers, at the
    latent grid and in the latent's own orientation (`model.orientation`: FreeInv's transform of the
    call in flight). Read only: the model's outputs are those without it, bit for bit."""

    def __init__(self, mask: EditMask, *, row: int, model=None, cross_layers=(), joint: bool = False):
        self.tokens, self.latent_size, self.frames = list(mask.tokens), mask.latent_size, mask.frames
        self.row, self.model = row, model
        self.cross_layers, self.joint = frozenset(cross_layers), joint
        self.total: torch.Tensor | None = None

    def _add(self, maps: torch.Tensor, frames) -> None:
        maps = transforms.invert(getattr(self.model, "orientation", "id"), maps)
        if self.total is None:
            self.total = torch.zeros(self.frames, *self.latent_size, device=maps.device)
        self.total[list(frames)] += maps

    def wants_probs(self, layer: str) -> bool:  # UNet cross-attention: p (b, q, heads, n, tokens)
        return layer in self.cross_layers

    def probs(self, layer, p, frames):
        self._add(token_grid(p[self.row].float()[..., self.tokens].mean(dim=(1, 3)), self.latent_size), frames)
        return None

    def wants_text_maps(self, layer: str) -> bool:  # SD3 / Flux joint attention
        return self.joint

    def text_maps(self, layer, q, k, scale, frames):
        for index, frame in enumerate(frames):  # one frame at a time: (heads, n, L) scores
            s = torch.einsum("nhd,lhd->hnl", q[self.row, index].float(), k[self.row, index].float()) * scale
            a = s.softmax(dim=-1)[..., self.tokens].mean(dim=(0, 2))  # (n,)
            self._add(token_grid(a[None], self.latent_size), [frame])

    def wants_video_maps(self, layer: str) -> bool:  # a video DiT's joint attention (CogVideoX)
        return not self.joint and not self.cross_layers

    def video_maps(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        """Wan's cross-attention: q (b, f n, heads, d) of the latent clip, or of the temporal window in
        flight (`vidinv.attention.windows.current_window`: its frames' maps weighted by its ramp, as
        its velocities are), k (b, L, heads, d)."""
        window = current_window()
        frames = range(self.frames) if window is None else range(*window[0].indices(self.frames))
        qr, kr = q[self.row].float(), k[self.row].float()
        a = torch.cat(
            [
                torch.einsum("nhd,lhd->hnl", part, kr).mul(scale).softmax(dim=-1)[..., self.tokens].mean(dim=(0, 2))
                for part in qr.split(QUERY_CHUNK)
            ]
        )
        maps = token_grid(a.reshape(len(frames), -1), self.latent_size)
        if window is not None:
            maps = maps * window[1].to(maps)[:, None, None]
        self._add(maps, frames)


class WanTextMaps:
    """A Wan cross-attention processor that shows the layer's image queries and text keys to a
    `WordMaps` and then runs the layer's own processor (its output unchanged)."""

    def __init__(self, original, probe: WordMaps):
        self.original, self.probe = original, probe

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is not None:
            from diffusers.models.transformers.transformer_wan import _get_qkv_projections

            text = encoder_hidden_states[:, -WAN_TEXT_TOKENS:] if attn.add_k_proj is not None else encoder_hidden_states
            q, k, _ = _get_qkv_projections(attn, hidden_states, text)
            q = attn.norm_q(q).unflatten(2, (attn.heads, -1))
            k = attn.norm_k(k).unflatten(2, (attn.heads, -1))
            self.probe.video_maps(q, k, q.shape[-1] ** -0.5)
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def cross_layers(models) -> list[str]:
    """A UNet's probed cross-attention layers: those of FateZero's default store (below the full
    latent resolution), all of them when there are none."""
    from vidinv.models.family import family_or_default

    unet = models.unet
    cross = [n for n in family_or_default(models).store_layers(unet) if unet.get_submodule(n).is_cross_attention]
    names = [name.rsplit(".", 1)[0] for name in unet.attn_processors]
    return cross or [n for n in names if unet.get_submodule(n).is_cross_attention]


def word_probe(models, mask: EditMask | None, *, row: int, model=None) -> WordMaps | None:
    """The `WordMaps` of the model's calls (None when the mask is not made from words)."""
    if mask is None or not mask.words:
        return None
    if getattr(models, "pipeline", None) is None:
        return WordMaps(mask, row=row, model=model, cross_layers=cross_layers(models))
    return WordMaps(mask, row=row, model=model, joint=not models.video)


@contextmanager
def probing(models, probe: WordMaps | None, handle=None):
    """The model's calls inside the block are seen by `probe` (nothing without one): a hook on the
    frame-attention handle (UNet, SD3 / Flux; CogVideoX's joint attention: `video_maps` over its clip),
    Wan's cross-attention processors wrapped."""
    if probe is None:
        yield
        return
    if getattr(models, "video", False) and getattr(models.family, "joint_attention", None) is None:
        layers = [block.attn2 for block in models.transformer.blocks]
        originals = [attn.processor for attn in layers]
        for attn, original in zip(layers, originals):
            attn.processor = WanTextMaps(original, probe)
        try:
            yield
        finally:
            for attn, original in zip(layers, originals):
                attn.processor = original
        return
    from vidinv.attention.inflate import ensure_frame_attention

    handle = handle or ensure_frame_attention(models.denoiser)
    handle.hooks.append(probe)
    try:
        yield
    finally:
        handle.hooks.remove(probe)


def model_rows(model) -> int:
    """Prompt rows of a source model (`GuidedModel.rows`, a flow model's condition rows)."""
    return model.rows if hasattr(model, "rows") else model.cond.rows


class MaskedSource:
    """The source branch a masked inversion-based edit blends with after every step (module
    docstring): the reconstruction run beside the edit with its own model calls (exactly those of
    `vidinv.inversion.reconstruct`: its latents are the reconstruction's, bit for bit), the edit's
    hooks set aside while they run; or the record's latents (`from_record`: an exact sampler's,
    or PnP's `source_branch: inverted`), no calls but two: an exact sampler's last step is the
    record's model stepped from the record's last noisy latent, as the reconstruction steps it
    (the record's last latent is the input itself, which that step reproduces only to ~1e-8), and
    with a mask made from words the source prompt's cond row at the record's latent every step."""

    def __init__(self, mask: EditMask, models, record, config, *, from_record: bool, control=None, hook=None):
        from vidinv.attention.handle import frame_attention_of
        from vidinv.inversion.api import denoiser_class, inversion_control, record_model, table_for, text_size
        from vidinv.inversion.methods import get_inversion_method

        self.mask, self.models, self.record, self.from_record, self.hook = mask, models, record, from_record, hook
        self.handle = frame_attention_of(models.denoiser)
        self.model, self.sampler, self.plain = record_model(models, record, config, control)
        self.steps = len(self.sampler.table)
        self.last_step = from_record and self.sampler.exact  # the reconstruction's last step, in a call
        self.z = self.carry = None
        self.probe_model = self.probe_plain = None
        if from_record and mask.words:  # the cond row at the record's latent, through the record's method
            self.probe_plain = denoiser_class(models).for_prompt(
                models,
                record.source_prompt,
                1.0,
                chunk=config.runtime.unet_chunk,
                size=text_size(models, record.latents),
                control=inversion_control(record, control),
            )
            table = table_for(models, record)
            self.probe_model = get_inversion_method(record.method)(config.inversion).wrap(
                self.probe_plain, record, table
            )

    @property
    def kind(self) -> str:
        return "record" if self.from_record else "reconstructed"

    @property
    def frame_calls(self) -> int:
        return sum(m.frame_calls for m in (self.plain, self.probe_plain) if m is not None)

    def begin(self, start: int, device) -> None:
        """The source's latent at the edit's first step (the reconstruction's, from the record)."""
        if not self.from_record:
            self.z = self._record_latent(start, device)

    def _record_latent(self, i: int, device) -> torch.Tensor:
        from vidinv.inversion.timesteps import work_dtype

        z = self.record.latents[i].to(device)
        return z.to(work_dtype(z.dtype))

    @contextmanager
    def _aside(self):
        """The edit's hooks set aside (its injection, fusion, propagation act on no source call)."""
        hooks = None if self.handle is None else list(self.handle.hooks)
        step = getattr(self.hook, "step", None)
        if hasattr(self.hook, "step"):
            self.hook.step = None
        if hooks is not None:
            self.handle.hooks[:] = []
        try:
            yield
        finally:
            if hooks is not None:
                self.handle.hooks[:] = hooks
            if hasattr(self.hook, "step"):
                self.hook.step = step

    def after_step(self, z_edit: torch.Tensor, i: int, t) -> torch.Tensor:
        """The edit's latent after step i blended with the source's after step i."""
        watched = self.probe_plain if self.from_record else self.plain
        probe = (
            None if watched is None else word_probe(self.models, self.mask, row=model_rows(watched) - 1, model=watched)
        )
        with self._aside():
            with probing(self.models, probe, self.handle):
                if not self.from_record:
                    self.z, self.carry = self.sampler.advance(self.model, self.z, i, self.carry)
                elif probe is not None:
                    self.probe_model(self._record_latent(i, z_edit.device), t)
            if self.last_step and i == self.steps - 1:
                source, _ = self.sampler.advance(self.model, self._record_latent(i, z_edit.device), i)
            else:
                source = self.z if not self.from_record else self.record.latents[i + 1]
        if probe is not None:
            self.mask.set_words(probe.total)
        return self.mask.blend(z_edit, source)

    def describe(self) -> dict:
        return {**self.mask.describe(), "source": self.kind, "source_calls": self.frame_calls}


def masked_source(method, record, from_record: bool, hook) -> MaskedSource | None:
    """The source branch `method`'s masked edit blends with (None without a mask): the record's
    latents when its source branch reads them (`from_record`), else the reconstruction beside it."""
    if method.mask is None:
        return None
    return MaskedSource(
        method.mask,
        method.models,
        record,
        method.config,
        from_record=from_record,
        control=method.control,
        hook=hook,
    )


__all__ = [
    "EditMask",
    "MaskedSource",
    "WordMaps",
    "edit_mask",
    "grid_of",
    "latent_from_pixels",
    "mask_word_tokens",
    "masked_source",
    "probing",
    "shape_mask",
    "threshold_mask",
    "token_grid",
    "tokenizer_positions",
    "word_probe",
]
