"""The edit: sample with the target prompt from the inversion record, structure kept by PnP injection.

The source branch and the edit branch are carried together as one pair of clips z (2 f c h w)
(pair[0] = source, pair[1] = edit) through the inversion engine's own samplers (`ddim_sample`,
`ddpm_ef_sample`) and its method wrappers (FreeInv's per-step transform, MBDI's group mean), so
the edit steps with exactly the record's timesteps, transforms and noise maps. One batched UNet
call per step evaluates both branches:

    rows = [source uncond?, source cond, edit uncond?, edit cond]      (b f) frames each
    injection: each edit row takes the source row of its role (both take the source's cond row
    when the source branch is unguided, as in TokenFlow)
    eps_source = guide(rows of the source, record guidance)
    eps_edit   = guide(rows of the edit,   edit.guidance_scale)

The source branch is either the reconstruction run beside the edit (`source_branch:
reconstructed`: with the same prompt and guidance 1 the edit IS the reconstruction) or the
stored inversion latent of each step (`inverted`, TokenFlow's choice). For ddpm_ef both are the
same trajectory, since its reconstruction is exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from einops import repeat

from vidinv.attention import run_unet
from vidinv.attention.inflate import ensure_frame_attention
from vidinv.config import Config
from vidinv.editing.injection import PnPInjection, RowLayout
from vidinv.inversion.api import method_eps, prompt_rows, skip_for, table_for
from vidinv.inversion.ddim import ddim_sample
from vidinv.inversion.ddpm_ef import ddpm_ef_sample
from vidinv.inversion.denoiser import guide
from vidinv.inversion.record import InversionRecord
from vidinv.inversion.timesteps import StepTable


@dataclass
class EditResult:
    """Edited latents (f c h w), the source branch's final latents, and what the edit cost."""

    latents: torch.Tensor
    source_latents: torch.Tensor
    stats: dict = field(default_factory=dict)


class PairDenoiser:
    """eps(z, t) for the (source, edit) pair z (2 f c h w) in one batched UNet call per step."""

    def __init__(
        self,
        unet,
        table: StepTable,
        *,
        source_rows: torch.Tensor,
        source_guidance: float,
        edit_rows: torch.Tensor,
        edit_guidance: float,
        injection: PnPInjection,
        chunk: int | None,
    ):
        self.unet, self.table, self.injection, self.chunk = unet, table, injection, chunk
        self.n_source = source_rows.shape[0]
        self.emb = torch.cat([source_rows, edit_rows])  # (b l d)
        self.source_guidance, self.edit_guidance = source_guidance, edit_guidance
        self.layout = RowLayout.for_branches(self.n_source, self.emb.shape[0] - self.n_source)
        self.calls = 0

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        param = next(self.unet.parameters())
        x = z.to(device=param.device, dtype=param.dtype)
        n_edit = self.emb.shape[0] - self.n_source
        batch = torch.cat(
            [repeat(x[0], "f c h w -> b f c h w", b=self.n_source), repeat(x[1], "f c h w -> b f c h w", b=n_edit)]
        )
        step = self.table.index_of(t)
        self.injection.set_step(step, self.layout)
        eps = self.run(batch, t, step).to(z.dtype)
        return torch.stack(
            [guide(eps[: self.n_source], self.source_guidance), guide(eps[self.n_source :], self.edit_guidance)]
        )

    def extra_stats(self) -> dict:
        """What a subclass adds to EditResult.stats."""
        return {}

    def run(self, batch: torch.Tensor, t, step: int) -> torch.Tensor:
        """eps (b f c h w) of the rows' batch at step `step` (one chunked UNet call; subclasses may
        run several passes, e.g. TokenFlow's keyframe and propagation passes)."""
        eps = run_unet(self.unet, batch, t, self.emb.to(batch.device), chunk=self.chunk)
        self.calls += batch.shape[0] * batch.shape[1]
        return eps


class InvertedSource:
    """Puts the record's inversion latent of the step into the source half of the pair before
    the method wrapper sees it (so a FreeInv transform applies to both halves alike)."""

    def __init__(self, eps, latents: torch.Tensor, table: StepTable):
        self.eps, self.latents, self.table = eps, latents, table

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        z = z.clone()
        z[0] = self.latents[self.table.index_of(t)].to(device=z.device, dtype=z.dtype)
        return self.eps(z, t)


def injection_steps(config: Config, steps: int) -> tuple[int, int]:
    """(feature steps, attention steps): the first fractions of the steps with injection."""
    ed = config.edit
    return round(ed.inject_features * steps), round(ed.inject_attention * steps)


def start_step(config: Config, method: str) -> int:
    """The step an edit starts from: T_skip for ddpm_ef, else 0 (z_T)."""
    return skip_for(config) if method == "ddpm_ef" else 0


def pair_denoiser(
    models, record: InversionRecord, config: Config, table: StepTable, injection, *, denoiser=PairDenoiser
):
    """The (source, edit) pair's denoiser: the record's prompt and guidance for the source branch,
    the target prompt (negative prompt as unconditional) and edit guidance for the edit branch."""
    ed = config.edit
    source_rows, source_guidance = prompt_rows(models, record.source_prompt, record.guidance_scale)
    edit_rows, edit_guidance = prompt_rows(models, ed.target_prompt, ed.guidance_scale, ed.negative_prompt)
    return denoiser(
        models.unet,
        table,
        source_rows=source_rows,
        source_guidance=source_guidance,
        edit_rows=edit_rows,
        edit_guidance=edit_guidance,
        injection=injection,
        chunk=config.runtime.unet_chunk,
    )


def sample_pair(
    models, record: InversionRecord, config: Config, table: StepTable, pair_eps, hooks, *, progress: bool = False
) -> tuple[torch.Tensor, dict]:
    """Run the record's sampler on the (source, edit) pair with `hooks` (a context manager) active.

    The pair eps is wrapped in the record's method (FreeInv transform / MBDI mean) and, with
    `source_branch: inverted`, fed the stored inversion latents as its source half. Returns the
    final pair (2 f c h w) and the stats every edit method reports.
    """
    eps = method_eps(pair_eps, record, table)
    if config.edit.source_branch == "inverted" and record.method != "ddpm_ef":
        eps = InvertedSource(eps, record.latents, table)
    start = start_step(config, record.method)
    z = repeat(record.latents[start].to(models.device), "f c h w -> p f c h w", p=2)
    started = time.perf_counter()
    with hooks:
        if record.method == "ddpm_ef":
            pair = ddpm_ef_sample(eps, z, table, record.noise_maps, start=start, progress=progress, desc="edit")
        else:
            pair = ddim_sample(eps, z, table, start=start, progress=progress, desc="edit")
    if models.device.type == "cuda":
        torch.cuda.synchronize(models.device)
    stats = {
        "edit_s": round(time.perf_counter() - started, 4),
        "unet_calls": pair_eps.calls,
        "start_step": start,
        "rows_per_call": pair_eps.layout.rows,
    }
    return pair, stats


def pnp_injection(models, config: Config, steps: int) -> PnPInjection:
    """The configured PnP injection on the UNet (checks the layer names: one-line errors)."""
    ed = config.edit
    feature_steps, attention_steps = injection_steps(config, steps)
    return PnPInjection(
        models.unet,
        ensure_frame_attention(models.unet, config.model.attention),
        feature_layers=list(ed.feature_layers),
        attention_layers=None if ed.attention_layers is None else list(ed.attention_layers),
        feature_steps=feature_steps,
        attention_steps=attention_steps,
    )


def check_config(models, config: Config) -> None:
    """Fail before the inversion, not after it, on layer names this UNet does not have."""
    pnp_injection(models, config, config.inversion.steps)


@torch.no_grad()
def pnp_edit(
    models, record: InversionRecord, config: Config, *, progress: bool = False, denoiser=PairDenoiser
) -> EditResult:
    """Edit the clip of `record` towards `config.edit.target_prompt` with PnP injection.

    `denoiser` builds the pair's eps callable (PairDenoiser's arguments); a subclass may run its
    own UNet passes (TokenFlow) and report `extra_stats()`.
    """
    table = table_for(models, record)
    injection = pnp_injection(models, config, len(table))
    feature_steps, attention_steps = injection.feature_steps, injection.attention_steps
    pair_eps = pair_denoiser(models, record, config, table, injection, denoiser=denoiser)
    pair, stats = sample_pair(models, record, config, table, pair_eps, injection, progress=progress)
    stats.update(
        feature_injection_steps=feature_steps,
        attention_injection_steps=attention_steps,
        attention_layers=sorted(injection.attention_layers),
        **pair_eps.extra_stats(),
    )
    return EditResult(latents=pair[1], source_latents=pair[0], stats=stats)


pnp_edit.check_config = check_config
