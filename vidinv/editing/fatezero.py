"""FateZero (Qi et al., ICCV 2023, arXiv 2303.09535): fuse the source's attention maps from the
inversion into the edit.

Where the source maps come from (`edit.fatezero.store`):
- `memory`: `AttentionStore` captures them during the inversion (a `Capture`): the planned layers
  at the planned timesteps only, in `edit.fatezero.store_dtype`, bounded by `edit.fatezero.store_limit_mb`; saved
  next to the record and reused with it. The edit then runs no source rows at all.
- `recompute`: no store. The inversion's UNet call at step i is a pure function of the record
  (the latent it saw, `Sampler.inversion_latent(i)`), the timestep, the step's transform and the
  prompt, so the edit recomputes it: a source row (the source prompt's cond row at that latent)
  runs in the edit's batch at the fused steps and its maps are fused as they are computed. Memory
  is bounded by the UNet chunk; recomputed maps equal the stored ones (tested).
- `auto` (default): `memory` when the predicted store fits `store_limit_mb`, else `recompute`.
A record without a matching store (reused from another run, or given to the API) is edited by
recomputing.

The edit samples through the record's sampler and method wrapper (FreeInv's transform of step i
applies to the whole batch, so maps and fusion share the orientation of step i; MBDI's group
members are matched by occurrence), and fuses attention in the edit's CONDITIONAL row only (as
FateZero and prompt-to-prompt edit only the conditional half of the batch):
- self-attention, for the first `edit.fatezero.self_attn_steps` of the steps: FateZero's Attention Map
  Blending (paper Sec. 3.2, eq. 5): s_fused = M * s_edit + (1 - M) * s_src, out = s_fused @ V_edit;
  M = 0 (no `blend_words`) is full replacement by the source maps;
- cross-attention, for the first `edit.fatezero.cross_attn_steps`: c_fused = M * c_edit + (1 - M) * c_src,
  the source maps' token columns carried to the target prompt's tokens by alignment
  (prompt-to-prompt's word mapping; new target words get no source attention).
- M (per frame, per step): the source's cross-attention of the `edit.fatezero.blend_words` tokens,
  averaged over heads, tokens and the stored cross layers at the latent resolution, normalised
  by its per-frame max and thresholded at `edit.fatezero.mask_threshold` (FateZero's `blend_th`);
  area-pooled to each layer's resolution. When recomputing, the mask of a step comes from a
  source-row pre-pass over the clip (F more frame-calls per masked step).
FateZero's optional latent blend (`masked_latents`, off in its configs) is not done.

Frame-calls: F x R_e x S (memory), plus F x (fused steps - start) for the recomputed source row,
plus F x (masked steps - start) for mask pre-passes with blend words (recompute).

Same prompt, same guidance and full replacement: the fused maps are the source's own maps at the
INVERSION's latents, while the reconstruction evaluates the UNet at the SAMPLED latents; the edit
equals the reconstruction only where those coincide (ddpm_ef: exactly; DDIM family: off by the
inversion's mismatch, and exact with maps captured along the reconstruction; tests/test_fatezero.py).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from vidinv.attention.inflate import ensure_frame_attention
from vidinv.attention.processors import AttentionHook
from vidinv.attention.runner import discarded
from vidinv.config import Config
from vidinv.editing.attention_store import AttentionStore, StorePlan
from vidinv.editing.branches import EditDenoiser, SourceBranch, build_denoiser, sample_edit
from vidinv.editing.masks import grid_of as _grid
from vidinv.editing.masks import masked_source, threshold_mask, token_grid, tokenizer_positions
from vidinv.editing.methods import EditMethod, EditResult
from vidinv.errors import VidinvError
from vidinv.inversion.api import record_model, table_for
from vidinv.inversion.costs import inversion_method
from vidinv.inversion.samplers import SAMPLERS
from vidinv.inversion.timesteps import StepTable
from vidinv.models.family import family_or_default

log = logging.getLogger("vidinv")


@dataclass
class FateZeroSettings:
    """FateZero's attention fusion (`edit.fatezero`)."""

    self_attn_steps: float = 0.5  # fraction of steps whose self-attention maps are replaced by the stored source maps
    cross_attn_steps: float = 0.8  # fraction of steps whose cross-attention is blended with the stored maps
    # attention layers (attn1/attn2 module names) stored and fused; null = every layer below the full
    # latent resolution (as prompt-to-prompt/FateZero store maps of at most 32x32 in SD at 512 px)
    store_layers: list[str] | None = None
    # words of the source prompt whose cross-attention masks the edit (FateZero's blend words): the
    # edit changes only where they attend; empty = no mask, the fused maps apply everywhere
    blend_words: list[str] = field(default_factory=list)
    mask_threshold: float = 0.3  # threshold on the normalised cross-attention of blend_words
    store_limit_mb: int = 4096  # bound on the attention store (CPU, fp16)
    # where the source maps come from: captured during the inversion and held (memory), recomputed
    # by a source row in the edit (recompute), or auto = memory when it fits store_limit_mb
    store: str = "auto"
    store_dtype: str = "fp16"  # precision of the stored maps (fp32 only for exactness checks)

    choices: ClassVar[dict] = {"store": ("auto", "memory", "recompute"), "store_dtype": ("fp16", "fp32")}

    def check(self, prefix: str) -> None:
        from vidinv.config import require, require_fractions

        require_fractions(self, prefix, ("self_attn_steps", "cross_attn_steps", "mask_threshold"))
        require(self.store_limit_mb >= 0, f"{prefix}.store_limit_mb", self.store_limit_mb, "an integer >= 0")


def step_counts(config: Config, steps: int) -> tuple[int, int]:
    """(self-attention steps, cross-attention steps): the first fractions of the steps with fusion."""
    ed = config.edit
    return round(ed.fatezero.self_attn_steps * steps), round(ed.fatezero.cross_attn_steps * steps)


def store_plan(models, config: Config, table: StepTable, start: int) -> StorePlan:
    """The maps the edit will use: configured layers at the timesteps of the fused steps."""
    unet = models.unet
    names = [name.rsplit(".", 1)[0] for name in unet.attn_processors]
    defaults = family_or_default(models)  # SD: below the full latent resolution; SDXL: the 32x32 level at 1024
    layers = (
        defaults.store_layers(unet)
        if config.edit.fatezero.store_layers is None
        else list(config.edit.fatezero.store_layers)
    )
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise VidinvError(
            f"edit.fatezero.store_layers: {', '.join(unknown)} not attention layers of this UNet (they are: {', '.join(names)})"
        )
    cross = [n for n in layers if unet.get_submodule(n).is_cross_attention]
    self_layers = [n for n in layers if n not in cross]
    n_self, n_cross = step_counts(config, len(table))
    cross_until = max(n_cross, n_self if config.edit.fatezero.blend_words else 0)  # the mask needs cross maps
    return StorePlan(
        self_layers=tuple(self_layers),
        cross_layers=tuple(cross),
        self_steps=tuple(int(table.timesteps[i]) for i in range(start, n_self)),
        cross_steps=tuple(int(table.timesteps[i]) for i in range(start, cross_until)),
        dtype=config.edit.fatezero.store_dtype,
    )


def new_store(models, config: Config, table: StepTable, start: int) -> AttentionStore:
    return AttentionStore(
        store_plan(models, config, table, start),
        limit_mb=config.edit.fatezero.store_limit_mb,
        unet=models.unet,
        attention_backend=config.model.attention,
    )


def _tokens(size: int, level: int) -> int:
    for _ in range(level):
        size = -(-size // 2)  # stride-2 convolutions with padding 1
    return size


def layer_tokens(unet, layer: str, latent_size: tuple[int, int]) -> int:
    """Query tokens of an attention layer for an h x w latent: down block k and up block L-1-k run
    at 1/2^k of the latent, the mid block at the lowest resolution."""
    depth = len(unet.config.block_out_channels) - 1
    block, index = layer.split(".")[:2]
    if block == "down_blocks":
        level = int(index)
    elif block == "up_blocks":
        level = depth - int(index)
    else:  # mid_block
        level = depth
    return _tokens(latent_size[0], level) * _tokens(latent_size[1], level)


def predicted_store_bytes(
    models, plan: StorePlan, latent_size: tuple[int, int], frames: int, pattern, occurrences: int = 1
) -> int:
    """Bytes of a store of `plan` for `frames` latents of `latent_size` under the frame pattern;
    `occurrences`: UNet calls per step (MBDI: the group size)."""
    unet = models.unet
    keys_frames = sum(len(pattern.attended(i, frames)) for i in range(frames))
    element = 2 if plan.dtype == "fp16" else 4
    total = 0
    for kind, layers in (("self", plan.self_layers), ("cross", plan.cross_layers)):
        for layer in layers:
            attn = unet.get_submodule(layer)
            n = layer_tokens(unet, layer, latent_size)
            keys = n * keys_frames if kind == "self" else frames * models.tokenizer.model_max_length
            total += attn.heads * n * keys * len(plan.steps(kind))
    return total * element * occurrences


def token_ids(models, prompt: str) -> list[int]:
    return models.tokenizer(
        prompt, padding="max_length", max_length=models.tokenizer.model_max_length, truncation=True
    ).input_ids


def word_positions(models, prompt: str, words: list[str], key: str = "edit.fatezero.blend_words") -> list[int]:
    """Token positions of each word (all its tokens, every occurrence) in the tokenised prompt."""
    return tokenizer_positions(models.tokenizer, prompt, words, models.tokenizer.model_max_length, key)


def token_map(models, source_prompt: str, target_prompt: str) -> torch.Tensor:
    """For each target token position, the aligned source position (-1: no counterpart)."""
    src, tgt = token_ids(models, source_prompt), token_ids(models, target_prompt)
    index = torch.full((len(tgt),), -1, dtype=torch.long)
    for block in difflib.SequenceMatcher(None, src, tgt, autojunk=False).get_matching_blocks():
        index[block.b : block.b + block.size] = torch.arange(block.a, block.a + block.size)
    return index


def blend_map(maps: torch.Tensor, tokens: list[int], latent_size: tuple[int, int]) -> torch.Tensor:
    """One cross layer's attention (q, heads, n, 77) on the blend tokens, as (q, h, w) at the latent size."""
    return token_grid(maps.float()[..., tokens].mean(dim=(1, 3)), latent_size)  # (q, n) -> (q, h, w)


class FateZeroFusion(AttentionHook):
    """Fuses the source maps into the edit's conditional row (see the module docstring): from the
    `store`, or (store None) from the source row (row 0) of the same call. A context manager on
    the frame-attention handle; `set_step` is called by the edit's denoiser."""

    def __init__(
        self,
        handle,
        store: AttentionStore | None,
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
        self.source_row: int | None = None
        self.live_mask: torch.Tensor | None = None  # recomputing: this call's mask (f, h, w)
        self._seen: dict[tuple, int] = {}
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self._mask_means: list[torch.Tensor] = []  # on the device; read once, in the stats
        self.fused = {"self": 0, "cross": 0}

    def set_step(self, step: int, layout) -> None:
        self.step, self.t, self.row = step, int(self.table.timesteps[step]), layout.rows - 1
        self.source_row = 0 if layout.sources else None

    def _active(self, kind: str) -> bool:
        until = self.self_steps if kind == "self" else self.cross_steps
        return self.step is not None and self.step < until and self.t in self.plan.steps(kind)

    def mask_needed(self, step: int) -> bool:
        return bool(self.blend_tokens) and step < max(self.self_steps, self.cross_steps)

    def wants_probs(self, layer: str) -> bool:
        kind = self.plan.kind_of(layer)
        return kind is not None and self._active(kind)

    def stored_mask(self, t: int, occurrence: int) -> torch.Tensor:
        """The blend mask (f, h, w) of step t from the store's cross maps."""
        if (t, occurrence) not in self._masks:
            frames = range(self.store.frames)
            total = sum(
                blend_map(self.store.get("cross", t, occurrence, layer, frames), self.blend_tokens, self.latent_size)
                for layer in self.plan.cross_layers
            )
            self._masks[(t, occurrence)] = threshold_mask(total, self.threshold)
            self._mask_means.append(self._masks[(t, occurrence)].mean())
        return self._masks[(t, occurrence)]

    def set_live_mask(self, total: torch.Tensor) -> None:
        """Recomputing: the mask of the call in flight from the pre-pass's summed blend maps."""
        self.live_mask = threshold_mask(total, self.threshold)
        self._mask_means.append(self.live_mask.mean())

    def _source(self, kind: str, t: int, layer: str, frames, p: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(source maps (q, heads, n, keys), occurrence) of this call."""
        seen = (kind, t, layer, frames[0])
        occurrence = self._seen.get(seen, 0)
        self._seen[seen] = occurrence + 1
        if self.store is None:
            return p[self.source_row], occurrence
        return self.store.get(kind, t, occurrence, layer, frames).to(device=p.device, dtype=p.dtype), occurrence

    def probs(self, layer: str, p: torch.Tensor, frames: tuple[int, ...]) -> torch.Tensor:
        kind, t = self.plan.kind_of(layer), self.t
        source, occurrence = self._source(kind, t, layer, frames, p)
        if kind == "cross":  # source token columns carried to the target's tokens
            index = self.token_index.to(p.device)
            source = source[..., index.clamp_min(0)] * (index >= 0).to(p.dtype)
        edit = p[self.row]
        mask = None
        if self.blend_tokens:
            mask = self.live_mask if self.store is None else self.stored_mask(t, occurrence)
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
        return round(float(torch.stack(self._mask_means).double().mean()), 4) if self._mask_means else None

    def __enter__(self):
        self.handle.hooks.append(self)
        return self

    def __exit__(self, *exc):
        if self in self.handle.hooks:
            self.handle.hooks.remove(self)
        self.step = self.t = self.row = None
        return False


class BlendProbe(AttentionHook):
    """Sums the source row's blend-token cross-attention over the planned cross layers (pre-pass)."""

    def __init__(self, plan: StorePlan, tokens: list[int], latent_size, frames: int):
        self.plan, self.tokens, self.latent_size, self.frames = plan, tokens, latent_size, frames
        self.total = None  # (f, h, w) float32 on the maps' device: no host copy per layer

    def wants_probs(self, layer):
        return layer in self.plan.cross_layers

    def probs(self, layer, p, frames):
        blend = blend_map(p[0], self.tokens, self.latent_size)
        if self.total is None:
            self.total = torch.zeros(self.frames, *self.latent_size, device=blend.device)
        self.total[list(frames)] += blend
        return None


class FateZeroDenoiser(EditDenoiser):
    """EditDenoiser that, when recomputing with blend words, first runs the source row alone over
    the clip to get the step's blend mask (the mask needs every cross layer before any fusion)."""

    def __init__(self, *args, fusion: FateZeroFusion, handle, **kwargs):
        super().__init__(*args, **kwargs)
        self.fusion, self.handle = fusion, handle
        self.mask_calls = 0

    def run(self, branches, rows, t, step, text, reduce=None):
        if self.fusion.store is None and self.fusion.mask_needed(step):
            frames = branches.shape[1]
            probe = BlendProbe(self.fusion.plan, self.fusion.blend_tokens, self.fusion.latent_size, frames)
            hooks = self.handle.hooks
            saved, hooks[:] = list(hooks), [probe]  # the source row alone: nothing fuses or injects
            try:
                control = self.current_control([self.source_control])
                source = text.select([0])
                self.call_unet(  # the source branch; its predictions are not kept
                    branches[:1], t, source, rows=None, control=control, chunk=self.chunk, reduce=discarded
                )
            finally:
                hooks[:] = saved
            self.fusion.set_live_mask(probe.total)
            self.mask_calls += frames
            self.frame_calls += frames
        return super().run(branches, rows, t, step, text, reduce)

    def extra_stats(self):
        return {"mask_pass_calls": self.mask_calls}


class FateZeroEdit(EditMethod):
    """FateZero's attention fusion (module docstring). `self.store` holds the captured maps of the
    record it was captured for (its fingerprint)."""

    name = "fatezero"
    settings = FateZeroSettings
    uses_control = True
    masks = True
    captures_in_inversion = True  # the attention store, when it is held in memory

    def __init__(self, models, config):
        super().__init__(models, config)
        self.store: AttentionStore | None = None

    def plan(self, table: StepTable, start: int) -> StorePlan:
        return store_plan(self.models, self.config, table, start)

    def check(self) -> None:
        """Layer names and blend words, before the inversion."""
        table = table_for(self.models, self.config.inversion.steps)
        self.plan(table, 0)
        if self.config.edit.fatezero.blend_words:
            word_positions(
                self.models, self.config.inversion.source_prompt, list(self.config.edit.fatezero.blend_words)
            )

    @classmethod
    def store_in_memory(cls, config, store_bytes: int) -> bool:
        """`edit.fatezero.store` resolved for a store of `store_bytes` (auto: memory when it fits
        `store_limit_mb`)."""
        fz = config.edit.fatezero
        return fz.store == "memory" or (fz.store == "auto" and store_bytes <= fz.store_limit_mb * 2**20)

    def store_mode(self, shape: tuple[int, ...]) -> str:
        """`edit.fatezero.store`, with `auto` resolved by the predicted size of the store for latents of `shape`."""
        if self.config.edit.fatezero.store != "auto":
            return self.config.edit.fatezero.store
        table = table_for(self.models, self.config.inversion.steps)
        plan = self.plan(table, self._inversion_start(table))
        handle = ensure_frame_attention(self.models.unet, self.config.model.attention)
        group = inversion_method(self.config).evaluations_per_step(tuple(shape[-2:]))
        size = predicted_store_bytes(self.models, plan, tuple(shape[-2:]), shape[0], handle.pattern, group)
        return "memory" if self.store_in_memory(self.config, size) else "recompute"

    @classmethod
    def predicted_frame_calls(cls, config, frames, latent_hw, *, store_in_memory: bool = True, **context) -> int:
        """F x R_e x S with a stored store; recomputing adds a source row for the fused steps (and a
        mask pre-pass per masked step with blend words); with edit.mask, its source branch's calls."""
        from vidinv.inversion.costs import Costs

        costs, fz = Costs(config), config.edit.fatezero
        calls = frames * costs.edit_rows * costs.edit_steps
        if not store_in_memory:
            fused = max(0, max(step_counts(config, costs.steps)) - costs.start)
            calls += frames * fused * (2 if fz.blend_words else 1)
        mask = costs.mask_calls(frames, latent_hw, from_record=costs.sampler.exact)  # a masked edit's source
        return calls * costs.group(latent_hw) + mask

    @classmethod
    def predicted_store_bytes(cls, config, unet, family, frames: int, latent_hw: tuple[int, int]) -> int:
        """The attention store of this run (`predicted_store_bytes`) for the UNet `unet` (fake
        modules) of `family`, on the SD scheduler's step table."""
        from types import SimpleNamespace

        from diffusers import DDIMScheduler

        from vidinv.attention.frames import FramePattern
        from vidinv.inversion.costs import Costs
        from vidinv.inversion.timesteps import step_table
        from vidinv.models.tiny import SD_SCHEDULER_CONFIG

        table = step_table(DDIMScheduler(**SD_SCHEDULER_CONFIG), config.inversion.steps)
        costs = Costs(config)
        plan = store_plan(SimpleNamespace(unet=unet, family=family), config, table, costs.start)
        m = config.model
        pattern = FramePattern(
            m.frame_attention, keyframes=m.keyframes, keyframe_stride=m.keyframe_stride, group=m.attention_group
        )
        models = SimpleNamespace(unet=unet, tokenizer=SimpleNamespace(model_max_length=77))
        return predicted_store_bytes(models, plan, latent_hw, frames, pattern, costs.group(latent_hw))

    def _inversion_start(self, table: StepTable) -> int:
        from vidinv.inversion.methods import get_inversion_method

        sampler_cls = SAMPLERS.get(get_inversion_method(self.config.inversion.method).sampler)
        return sampler_cls(table).default_start(self.config.edit.skip)

    def captures(self, shape: tuple[int, ...]) -> list[AttentionStore]:
        if self.store_mode(shape) != "memory":
            return []
        table = table_for(self.models, self.config.inversion.steps)
        self.store = new_store(self.models, self.config, table, self._inversion_start(table))
        return [self.store]

    def use_store(self, store: AttentionStore, record) -> None:
        """Edit `record` with maps captured elsewhere (e.g. along its reconstruction)."""
        store.finish(record)
        self.store = store

    def _matching_store(self, record, plan: StorePlan) -> AttentionStore | None:
        store = self.store
        if store is not None and store.fingerprint == record.fingerprint and store.plan.covers(plan):
            return store
        if self.config.edit.fatezero.store == "memory":
            log.info("FateZero: no attention store matches this record; recomputing the source maps")
        return None

    @torch.no_grad()
    def edit(self, record, *, progress: bool = False, callback=None) -> EditResult:
        ed, models = self.config.edit, self.models
        _, sampler, _ = record_model(models, record, self.config, self.control)
        table = sampler.table
        handle = ensure_frame_attention(models.unet, self.config.model.attention)
        start = sampler.default_start(ed.skip)
        plan = self.plan(table, start)
        store = self._matching_store(record, plan)
        self_steps, cross_steps = step_counts(self.config, len(table))
        blend = (
            word_positions(models, record.source_prompt, list(ed.fatezero.blend_words))
            if ed.fatezero.blend_words
            else []
        )
        fusion = FateZeroFusion(
            handle,
            store,
            plan,
            table,
            self_steps=self_steps,
            cross_steps=cross_steps,
            blend_tokens=blend,
            threshold=ed.fatezero.mask_threshold,
            token_index=token_map(models, record.source_prompt, ed.target_prompt),
            latent_size=tuple(record.latents.shape[-2:]),
        )
        until = max(self_steps if plan.self_layers else 0, cross_steps if plan.cross_layers else 0)
        source = SourceBranch(None) if store is not None else SourceBranch("inversion", until)
        denoiser = build_denoiser(
            models,
            record,
            self.config,
            sampler,
            source,
            fusion,
            denoiser=FateZeroDenoiser,
            control=self.control,
            fusion=fusion,
            handle=handle,
        )
        masked = masked_source(self, record, sampler.exact, fusion)  # the record's latents, or the reconstruction
        result = sample_edit(models, record, self.config, denoiser, progress=progress, callback=callback, masked=masked)
        store_stats = store.stats() if store is not None else {"store_origin": "recomputed"}
        result.stats.extra.update(
            self_attn_steps=self_steps,
            cross_attn_steps=cross_steps,
            store_layers=sorted(plan.self_layers + plan.cross_layers),
            fused_calls=dict(fusion.fused),
            blend_words=list(ed.fatezero.blend_words),
            mask_fraction=fusion.mask_fraction(),
            **store_stats,
        )
        return result


def fatezero_edit(models, record, config: Config, *, progress: bool = False) -> EditResult:
    """The FateZero edit of `record` by recomputing the source maps (function form of `FateZeroEdit`)."""
    return FateZeroEdit(models, config).edit(record, progress=progress)
