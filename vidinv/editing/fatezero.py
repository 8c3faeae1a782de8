"""FateZero (Qi et al., ICCV 2023, arXiv 2303.09535): fuse the attention maps stored during the
inversion into the edit.

1. During the inversion with the source prompt, `AttentionStore` keeps the source's self- and
   cross-attention probabilities at the planned layers/timesteps (fp16 on the CPU, bounded by
   `edit.store_limit_mb`); it is saved next to the record and reused with it (never recomputed
   when a matching one exists). A record that comes without a store (an in-memory record from
   `invert` without hooks, or an old run folder) gets one by *replaying* only the planned
   inversion UNet calls at the record's own latents: DDIM/FreeInv/MBDI step i evaluated eps at
   latents[i + 1] (ascending t), ddpm_ef at latents[i]; the replayed maps equal the captured
   ones bit for bit (tested).
2. The edit samples the (source, edit) pair through the record's sampler and method wrapper
   (FreeInv's transform of step i applies to the whole batch, so the stored maps of step i are in
   the orientation of the edit's step i; MBDI's group members are matched by occurrence), with
   PnP's `PairDenoiser`, and fuses attention in the edit's CONDITIONAL row only (as FateZero and
   prompt-to-prompt edit only the conditional half of the batch):
   - self-attention, for the first `edit.self_attn_steps` of the steps: FateZero's Attention Map
     Blending (paper Sec. 3.2, eq. 5): s_fused = M * s_edit + (1 - M) * s_src, out = s_fused @ V_edit;
     M = 0 (no `blend_words`) is full replacement by the stored maps;
   - cross-attention, for the first `edit.cross_attn_steps`: c_fused = M * c_edit + (1 - M) * c_src,
     the stored source maps' token columns carried to the target prompt's tokens by alignment
     (prompt-to-prompt's word mapping; new target words get no source attention), so unchanged
     regions keep the source's attention.
   - M (per frame, per step): the stored cross-attention of the `edit.blend_words` tokens in the
     source prompt, averaged over heads, tokens and stored cross layers at the latent resolution,
     normalised by its per-frame max and thresholded at `edit.mask_threshold` (FateZero's
     `blend_th` on the source words' maps); area-pooled to each layer's resolution.
   FateZero's optional latent blend (`masked_latents`, off in its configs) is not done.

Same prompt, same guidance and full replacement: the fused maps are the source's own maps at the
INVERSION's latents, while the reconstruction evaluates the UNet at the SAMPLED latents; the edit
equals the reconstruction exactly only where those coincide:
- ddpm_ef: its sampled trajectory is the inverted one (exact reconstruction), so the edit equals
  the reconstruction to fp32 rounding;
- DDIM / FreeInv / MBDI: off by the inversion's mismatch (eps at z_{t-1} vs z_t); with a store
  captured along the reconstruction's own trajectory the edit equals the reconstruction to fp32
  rounding, FreeInv's rotations included (tests/test_fatezero.py).
"""

from __future__ import annotations

import difflib
import logging
import math

import torch
import torch.nn.functional as F

from vidinv.attention.inflate import ensure_frame_attention
from vidinv.attention.processors import AttentionHook
from vidinv.config import Config
from vidinv.editing.attention_store import AttentionStore, StorePlan, store_of
from vidinv.editing.pnp import EditResult, pair_denoiser, sample_pair, start_step
from vidinv.errors import VidinvError
from vidinv.inversion.api import make_denoiser, method_eps, table_for
from vidinv.inversion.record import InversionRecord
from vidinv.inversion.timesteps import StepTable

log = logging.getLogger("vidinv")


def default_store_layers(unet) -> list[str]:
    """Every attention layer below the full latent resolution (not in the first down block or the
    last up block): FateZero/prompt-to-prompt keep maps of at most 32x32 in SD at 512 px."""
    last_up = f"up_blocks.{len(unet.up_blocks) - 1}."
    names = [name.rsplit(".", 1)[0] for name in unet.attn_processors]
    return [n for n in names if not n.startswith("down_blocks.0.") and not n.startswith(last_up)]


def step_counts(config: Config, steps: int) -> tuple[int, int]:
    """(self-attention steps, cross-attention steps): the first fractions of the steps with fusion."""
    ed = config.edit
    return round(ed.self_attn_steps * steps), round(ed.cross_attn_steps * steps)


def store_plan(models, config: Config, table: StepTable, start: int) -> StorePlan:
    """The maps the edit will use: configured layers at the timesteps of the fused steps."""
    unet = models.unet
    names = [name.rsplit(".", 1)[0] for name in unet.attn_processors]
    layers = default_store_layers(unet) if config.edit.store_layers is None else list(config.edit.store_layers)
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise VidinvError(
            f"edit.store_layers: {', '.join(unknown)} not attention layers of this UNet (they are: {', '.join(names)})"
        )
    cross = [n for n in layers if unet.get_submodule(n).is_cross_attention]
    self_layers = [n for n in layers if n not in cross]
    n_self, n_cross = step_counts(config, len(table))
    cross_until = max(n_cross, n_self if config.edit.blend_words else 0)  # the mask needs cross maps
    return StorePlan(
        self_layers=tuple(self_layers),
        cross_layers=tuple(cross),
        self_steps=tuple(int(table.timesteps[i]) for i in range(start, n_self)),
        cross_steps=tuple(int(table.timesteps[i]) for i in range(start, cross_until)),
        dtype=config.edit.store_dtype,
    )


def new_store(models, config: Config, table: StepTable, start: int) -> AttentionStore:
    return AttentionStore(
        store_plan(models, config, table, start),
        limit_mb=config.edit.store_limit_mb,
        unet=models.unet,
        attention_backend=config.model.attention,
    )


def inversion_hooks(models, config: Config) -> list[AttentionStore]:
    """What the inversion must capture for this edit (VideoEditor passes it to `invert`)."""
    table = table_for(models, config.inversion.steps)
    return [new_store(models, config, table, start_step(config, config.inversion.method))]


@torch.no_grad()
def replay_store(models, record: InversionRecord, config: Config, store: AttentionStore) -> AttentionStore:
    """Capture `store`'s plan by re-running only the planned inversion UNet calls at the record's latents."""
    table = table_for(models, record)
    eps = make_denoiser(models, record.source_prompt, record.guidance_scale, chunk=config.runtime.unet_chunk)
    wrapped = method_eps(eps, record, table)
    with store:
        for i in sorted(table.index_of(t) for t in store.plan.timesteps):
            t = table.timesteps[i]
            if record.method == "ddpm_ef":
                eps(record.latents[i], t)  # edit-friendly inversion: eps at x_t itself
            else:
                wrapped(record.latents[i + 1], t)  # DDIM inversion step i: eps at z_{t-1}
    store.origin = "replayed"
    store.attach(record)
    return store


def token_ids(models, prompt: str) -> list[int]:
    return models.tokenizer(
        prompt, padding="max_length", max_length=models.tokenizer.model_max_length, truncation=True
    ).input_ids


def word_positions(models, prompt: str, words: list[str]) -> list[int]:
    """Token positions of each word (all its tokens, every occurrence) in the tokenised prompt."""
    ids = token_ids(models, prompt)
    positions = []
    for word in words:
        piece = models.tokenizer(word, add_special_tokens=False).input_ids
        found = [s for s in range(len(ids) - len(piece) + 1) if piece and ids[s : s + len(piece)] == piece]
        if not found:
            raise VidinvError(
                f"edit.blend_words: {word!r} is not in the source prompt {prompt!r} "
                "(the mask comes from the source's stored cross-attention)"
            )
        positions += [s + k for s in found for k in range(len(piece))]
    return sorted(set(positions))


def token_map(models, source_prompt: str, target_prompt: str) -> torch.Tensor:
    """For each target token position, the aligned source position (-1: no counterpart)."""
    src, tgt = token_ids(models, source_prompt), token_ids(models, target_prompt)
    index = torch.full((len(tgt),), -1, dtype=torch.long)
    for block in difflib.SequenceMatcher(None, src, tgt, autojunk=False).get_matching_blocks():
        index[block.b : block.b + block.size] = torch.arange(block.a, block.a + block.size)
    return index


def _grid(tokens: int, h: int, w: int) -> tuple[int, int]:
    """The (rows, cols) of a layer with `tokens` query tokens for an h x w latent."""
    scale = math.sqrt(h * w / tokens)
    return round(h / scale), round(w / scale)


class FateZeroFusion(AttentionHook):
    """Fuses the stored source maps into the edit's conditional row (see the module docstring).
    A context manager on the frame-attention handle; `set_step` is called by `PairDenoiser`."""

    def __init__(
        self,
        handle,
        store: AttentionStore,
        plan: StorePlan,
        table: StepTable,
        *,
        self_steps: int,
        cross_steps: int,
        blend_tokens: list[int],
        threshold: float,
        token_index: torch.Tensor,
        latent_size: tuple[int, int],
    ):
        self.handle, self.store, self.table = handle, store, table
        self.plan = plan  # what this edit fuses (the store may hold more)
        self.self_steps, self.cross_steps = self_steps, cross_steps
        self.blend_tokens, self.threshold = blend_tokens, threshold
        self.token_index = token_index
        self.latent_size = latent_size
        self.step: int | None = None
        self.t: int | None = None
        self.row: int | None = None
        self._seen: dict[tuple, int] = {}
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self.fused = {"self": 0, "cross": 0}

    def set_step(self, step: int, layout) -> None:
        self.step, self.t, self.row = step, int(self.table.timesteps[step]), layout.rows - 1

    def _active(self, kind: str) -> bool:
        until = self.self_steps if kind == "self" else self.cross_steps
        return self.step is not None and self.step < until and self.t in self.plan.steps(kind)

    def wants_probs(self, layer: str) -> bool:
        kind = self.plan.kind_of(layer)
        return kind is not None and self._active(kind)

    def mask(self, t: int, occurrence: int) -> torch.Tensor | None:
        """The binary blend mask (f, h, w) of step t at the latent resolution, or None (no blend words)."""
        if not self.blend_tokens:
            return None
        if (t, occurrence) not in self._masks:
            h, w = self.latent_size
            frames = range(self.store.frames)
            total = 0
            for layer in self.plan.cross_layers:
                maps = self.store.get("cross", t, occurrence, layer, frames).float()  # (f, heads, n, 77)
                a = maps[..., self.blend_tokens].mean(dim=(1, 3))  # (f, n)
                rows, cols = _grid(a.shape[-1], h, w)
                a = a.reshape(len(a), 1, rows, cols)
                total = total + F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
            if not self.plan.cross_layers:
                raise VidinvError("edit.blend_words needs cross-attention layers in edit.store_layers")
            total = total / total.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            self._masks[(t, occurrence)] = (total > self.threshold).float()
        return self._masks[(t, occurrence)]

    def probs(self, layer: str, p: torch.Tensor, frames: tuple[int, ...]) -> torch.Tensor:
        kind, t = self.plan.kind_of(layer), self.t
        seen = (kind, t, layer, frames[0])
        occurrence = self._seen.get(seen, 0)
        self._seen[seen] = occurrence + 1
        source = self.store.get(kind, t, occurrence, layer, frames).to(device=p.device, dtype=p.dtype)
        if kind == "cross":  # source token columns carried to the target's tokens
            index = self.token_index.to(p.device)
            source = source[..., index.clamp_min(0)] * (index >= 0).to(p.dtype)
        edit = p[self.row]
        mask = self.mask(t, occurrence)
        if mask is None:
            fused = source
        else:
            rows, cols = _grid(p.shape[-2], *self.latent_size)
            m = F.adaptive_avg_pool2d(mask[list(frames)].unsqueeze(1).to(p.device), (rows, cols))
            m = m.reshape(len(frames), 1, rows * cols, 1).to(p.dtype)
            fused = m * edit + (1 - m) * source
        p = p.clone()
        p[self.row] = fused
        self.fused[kind] += 1
        return p

    def mask_fraction(self) -> float | None:
        """Mean fraction of the latent inside the blend mask over the steps that used one."""
        if not self._masks:
            return None
        return round(float(torch.stack([m.mean() for m in self._masks.values()]).mean()), 4)

    def __enter__(self):
        self.handle.hooks.append(self)
        return self

    def __exit__(self, *exc):
        if self in self.handle.hooks:
            self.handle.hooks.remove(self)
        self.step = self.t = self.row = None
        return False


def _store_for(
    models, record: InversionRecord, config: Config, table: StepTable, start: int
) -> tuple[AttentionStore, StorePlan]:
    """(store, plan): the record's store if it belongs to the record and covers the plan the
    config asks for (it may hold more), else a replayed one."""
    wanted = new_store(models, config, table, start)
    store = store_of(record)
    if store is not None and store.fingerprint == record.fingerprint and store.plan.covers(wanted.plan):
        return store, wanted.plan
    log.info("FateZero: the record carries no matching attention store; replaying the inversion's UNet calls")
    return replay_store(models, record, config, wanted), wanted.plan


@torch.no_grad()
def fatezero_edit(models, record: InversionRecord, config: Config, *, progress: bool = False) -> EditResult:
    """Edit the clip of `record` towards `config.edit.target_prompt` with FateZero's attention fusion."""
    ed = config.edit
    table = table_for(models, record)
    handle = ensure_frame_attention(models.unet, config.model.attention)
    start = start_step(config, record.method)
    store, plan = _store_for(models, record, config, table, start)
    self_steps, cross_steps = step_counts(config, len(table))
    blend = word_positions(models, record.source_prompt, list(ed.blend_words)) if ed.blend_words else []
    fusion = FateZeroFusion(
        handle,
        store,
        plan,
        table,
        self_steps=self_steps,
        cross_steps=cross_steps,
        blend_tokens=blend,
        threshold=ed.mask_threshold,
        token_index=token_map(models, record.source_prompt, ed.target_prompt),
        latent_size=tuple(record.latents.shape[-2:]),
    )
    pair_eps = pair_denoiser(models, record, config, table, fusion)
    pair, stats = sample_pair(models, record, config, table, pair_eps, fusion, progress=progress)
    stats.update(
        self_attn_steps=self_steps,
        cross_attn_steps=cross_steps,
        store_layers=sorted(plan.self_layers + plan.cross_layers),
        fused_calls=dict(fusion.fused),
        blend_words=list(ed.blend_words),
        mask_fraction=fusion.mask_fraction(),
        **store.stats(),
    )
    return EditResult(latents=pair[1], source_latents=pair[0], stats=stats)


fatezero_edit.inversion_hooks = inversion_hooks
