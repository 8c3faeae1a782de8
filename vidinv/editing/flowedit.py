"""FlowEdit (Kulikov et al. 2024, arXiv 2412.08629): inversion-free editing of a flow model's latents.

The edit path z_edit starts at the source latents x_src and, on the steps i of the grid it edits
(the last n_max, sampling order), follows the difference of the target and source velocities on a
noised copy of the source (Algorithm 1):

    z_src = (1 - sigma_i) x_src + sigma_i n,           n ~ N(0, I)  (n_avg draws, averaged)
    z_tar = z_src + (z_edit - x_src)
    z_edit <- z_edit + (sigma_{i+1} - sigma_i) * mean_n [ v_tar(z_tar, t_i) - v_src(z_src, t_i) ]

and, on the last n_min steps, samples the target alone from z_tar (SDEdit-like). v_src / v_tar
are the model under the source / target prompt with their own guidance (SD3: CFG; Flux: embedded
guidance), both branches in one batched call with the model's frame attention. With
`inversion.method: freeinv`, each step's velocities are seen through that step's FreeInv
transform (transform the latents, run the model, transform the velocities back), one transform
per step for every frame. Per-step noise is drawn from `edit.seed`, one map shared by all frames
(`inversion.noise: shared`) or one per frame.

z_tar is written z_src + (z_edit - x_src) (the paper: z_edit + z_src - x_src): equal in exact
arithmetic, and with equal prompts and guidance the velocity difference is then exactly zero, so
the source comes back bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vidinv.callbacks import Step
from vidinv.editing.masks import probing, word_probe
from vidinv.editing.methods import EditMethod, EditResult, EditStats
from vidinv.errors import VidinvError
from vidinv.inversion.flow import flow_table_for, is_flow_scheduler
from vidinv.inversion.flow_denoiser import flow_rows
from vidinv.inversion.freeinv import transformed
from vidinv.inversion.methods import ef_noise
from vidinv.inversion.record import InversionRecord, InversionStats
from vidinv.inversion.timesteps import level, work_dtype
from vidinv.models.families import FlowEditDefaults, family_record
from vidinv.models.flow import FlowCondition
from vidinv.models.offload import execution_device


@dataclass
class FlowEditSettings:
    """FlowEdit (`edit.flowedit`, flow models); null = the paper's default for the model's family."""

    n_max: int | None = None  # edited steps, counted from the clean end (SD3: 33 of 50, Flux: 24 of 28)
    n_min: int = 0  # last steps sampled from the target alone (0 = pure FlowEdit)
    n_avg: int = 1  # noise draws averaged per step
    source_guidance: float | None = None  # SD3: CFG 3.5; Flux: embedded guidance 1.5
    target_guidance: float | None = None  # SD3: CFG 13.5; Flux: embedded guidance 5.5


def flowedit_settings(config, family=None) -> tuple[int, int, int, int, float, float]:
    """(steps, n_max, n_min, n_avg, source guidance, target guidance) of `edit.flowedit`, null
    values taken from the family's defaults (`Family.flowedit`: the paper's settings; SD3's when
    `family`, a record or its name, is None)."""
    fe, steps = config.edit.flowedit, config.inversion.steps
    defaults = family_record(family).flowedit_defaults if family is not None else FlowEditDefaults()
    fraction, source, target = defaults.n_max_fraction, defaults.source_guidance, defaults.target_guidance
    n_max = round(fraction * steps) if fe.n_max is None else fe.n_max
    source = source if fe.source_guidance is None else fe.source_guidance
    target = target if fe.target_guidance is None else fe.target_guidance
    return steps, n_max, fe.n_min, fe.n_avg, source, target


class BranchVelocities:
    """v(z, t) for stacked branches z (k f c h w) under one condition each, in one batched call
    (in the `orientation` FreeInv's `transformed` sets, applied per pass)."""

    orientation = "id"

    def __init__(self, models, branches: list[tuple[FlowCondition, float]], *, chunk: int | None):
        from vidinv.attention.flow_runner import run_flow

        self.run, self.models, self.chunk = run_flow, models, chunk
        self.branches = branches
        self.cond = FlowCondition.cat([cond for cond, _ in branches])
        self.rows = [k for k, (cond, _) in enumerate(branches) for _ in range(cond.rows)]
        self.frame_calls = 0

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        from vidinv.attention.windows import latent_frame_calls
        from vidinv.guidance import guide

        transformer = self.models.transformer
        x = z.to(device=execution_device(transformer), dtype=transformer.dtype)

        def guided(part: torch.Tensor) -> torch.Tensor:
            part, out, start = part.to(z.dtype), [], 0
            for cond, guidance in self.branches:
                out.append(guide(part[start : start + cond.rows], guidance))
                start += cond.rows
            return torch.stack(out)

        pred = self.run(
            self.models, x, t, self.cond, chunk=self.chunk, rows=self.rows, transform=self.orientation, reduce=guided
        )
        self.frame_calls += len(self.rows) * latent_frame_calls(self.models, z.shape[1])  # windows: overlaps twice
        return pred


class FlowEdit(EditMethod):
    """`edit.method: flowedit` (module docstring); needs a flow-matching model (SD3, Flux, Wan)."""

    name = "flowedit"
    settings = FlowEditSettings
    inversion_free = True  # the record is the source latents (`source_record`)
    masks = True  # the velocity difference is masked: outside the mask z_edit stays x_src
    flow_models = True
    unet_models = False
    video_models = True

    def resolved(self) -> tuple[int, int, int, int, float, float]:
        """(steps, n_max, n_min, n_avg, source guidance, target guidance) with the family's defaults."""
        return flowedit_settings(self.config, self.models.family)

    @classmethod
    def predicted_frame_calls(cls, config, frames, latent_hw, *, family=None, **context) -> int:
        """Transformer frame-calls of the edit (`vidinv plan`; `family`: the model's record or its
        name, SD3's defaults when None): F x ((n_max - n_min) x (R_s + R_t) x n_avg + n_min x R_t), R = the
        branch's rows (SD3: 2 with CFG; Flux: 1, guidance embedded)."""
        from vidinv.guidance import is_guided

        _, n_max, n_min, n_avg, source, target = flowedit_settings(config, family)
        embedded = family is not None and family_record(family).guidance_embedded
        r_s, r_t = (
            1 if embedded else 1 + is_guided(prompt, g)
            for g, prompt in ((source, config.inversion.source_prompt), (target, config.edit.target_prompt))
        )
        return frames * ((n_max - n_min) * (r_s + r_t) * n_avg + n_min * r_t)

    def check(self) -> None:
        if not is_flow_scheduler(self.models.scheduler):
            raise VidinvError("edit.method: flowedit needs a flow-matching model (SD3, Flux, Wan)")
        steps, n_max, n_min, n_avg, source, target = self.resolved()
        if not 1 <= n_max <= steps:
            raise VidinvError(f"config: 'edit.flowedit.n_max' is {n_max}, expected an integer in 1..{steps}")
        if not 0 <= n_min <= n_max:
            raise VidinvError(f"config: 'edit.flowedit.n_min' is {n_min}, expected an integer in 0..{n_max}")
        if n_avg < 1:
            raise VidinvError(f"config: 'edit.flowedit.n_avg' is {n_avg}, expected an integer >= 1")
        if min(source, target) < 0:
            raise VidinvError("config: 'edit.flowedit' guidance must be >= 0")
        if self.config.edit.mask_words and n_min >= n_max:
            raise VidinvError(
                f"edit.mask_words: with edit.flowedit.n_min {n_min} = n_max no step runs the source, whose"
                " attention gives the mask; lower n_min"
            )

    def source_record(self, latents: torch.Tensor) -> InversionRecord:
        """The source latents as a record without inverting: FlowEdit needs x_src alone."""
        inv = self.config.inversion
        table = flow_table_for(self.models, inv.steps, latents)
        return InversionRecord(
            method="none",
            sampler="flow",
            prediction_type="flow",
            timesteps=table.to_list(),
            latents=latents.detach().to(work_dtype(latents.dtype)).cpu()[None],  # fp32, as invert's records
            source_prompt=inv.source_prompt,
            stats=InversionStats(frame_calls=0),
        )

    def transforms(self, steps: int, latent_hw: tuple[int, int]) -> list[str]:
        """FreeInv's transform of each step when the inversion method is freeinv, else the identity."""
        from vidinv.inversion.costs import inversion_method

        return inversion_method(self.config).step_transforms(steps, latent_hw)

    @torch.no_grad()
    def edit(self, record, *, progress: bool = False, callback=None) -> EditResult:
        ed, models = self.config.edit, self.models
        steps, n_max, n_min, n_avg, source_g, target_g = self.resolved()
        x_src = record.x0.to(device=models.device, dtype=work_dtype(record.x0.dtype))
        table = flow_table_for(models, steps, x_src)
        source = flow_rows(models, record.source_prompt, source_g)
        target = flow_rows(models, ed.target_prompt, target_g)
        chunk = self.config.runtime.unet_chunk
        both = BranchVelocities(models, [source, target], chunk=chunk)
        target_only = BranchVelocities(models, [target], chunk=chunk)
        schedule = self.transforms(steps, tuple(x_src.shape[-2:]))
        shared = self.config.inversion.noise == "shared"
        noise = ef_noise(tuple(x_src.shape), steps * n_avg, seed=ed.seed, shared=shared, dtype=x_src.dtype)
        noise = noise.to(x_src.device).view(steps, n_avg, *noise.shape[1:])

        mask = self.mask  # outside it the velocity difference is 0: z_edit stays x_src (docs/methods.md §8)
        t0 = time.perf_counter()
        z_edit, z_tar, start = x_src, None, steps - n_max
        for i in tqdm(range(start, steps), total=n_max, desc="flowedit", disable=not progress, leave=False):
            sigma, sigma_next, t = level(table.sigmas, i, x_src), level(table.sigmas, i + 1, x_src), table.timesteps[i]
            if i < steps - n_min:
                delta = torch.zeros_like(x_src)
                probe = word_probe(models, mask, row=source[0].rows - 1, model=both)  # mask_words: the source cond row
                with probing(models, probe):
                    for n in noise[i]:
                        z_src = (1 - sigma) * x_src + sigma * n
                        z = torch.stack([z_src, z_src + (z_edit - x_src)])
                        v = transformed(both, schedule[i])(z, t)
                        delta = delta + (v[1] - v[0]) / n_avg
                if probe is not None:
                    mask.set_words(probe.total)
                if mask is not None:
                    delta = mask.weights(delta) * delta
                z_edit = z_edit + (sigma_next - sigma) * delta
            else:
                if z_tar is None:  # the first target-only step: the edit's offset on a noised source
                    n0 = noise[i, 0]
                    z_tar = (1 - sigma) * x_src + sigma * n0 + (z_edit - x_src)
                v = transformed(target_only, schedule[i])(z_tar[None], t)[0]
                z_tar = z_tar + (sigma_next - sigma) * v
                if mask is not None:  # outside it: the noised source's straight path, x_src at the end
                    z_tar = mask.blend(z_tar, (1 - sigma_next) * x_src + sigma_next * n0)
            if callback is not None:
                callback(Step("edit", i - start, n_max, table.t(i), z_edit if z_tar is None else z_tar))
        stats = EditStats(
            edit_s=round(time.perf_counter() - t0, 4),
            frame_calls=both.frame_calls + target_only.frame_calls,
            extra={
                "n_max": n_max,
                "n_min": n_min,
                "n_avg": n_avg,
                "source_guidance": source_g,
                "target_guidance": target_g,
                "transforms": schedule[start:],
                **({"mask": mask.describe()} if mask is not None else {}),
            },
        )
        return EditResult(latents=z_edit if z_tar is None else z_tar, stats=stats)
