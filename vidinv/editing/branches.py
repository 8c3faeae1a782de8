"""The edit's sampling loop over its branches: an optional source branch and the edit branch.

Every edit method samples the edit branch with the record's sampler (its step rule), through
the record's method wrapper (FreeInv's transform of step i, MBDI's group mean), from
latents[start]. A source branch runs beside it only while something reads its rows:

    SourceBranch.kind     latent of the source rows at step i            rows
    "reconstructed"       the reconstruction run beside the edit          the record's prompt rows (guided as the record)
    "record"              record.latents[i] (exact samplers, or TokenFlow's "inverted" choice)   the source prompt's cond row
    "inversion"           where the inversion evaluated the model at step i (recomputing its maps)   the cond row
    none                  -                                              -

and only at steps i < `until`. ControlNet conditions (`control`) act on the edit rows, and on the
source rows when the record's inversion was controlled (they follow the inversion's model).
Each step is one batched UNet call (rows: [source rows..., edit
rows (uncond?, cond)]); hooks (PnP injection, TokenFlow, FateZero fusion) get
`set_step(i, layout)` before it. Frame-calls per step: F x (source rows if active + edit rows).
A first Ctrl-C stops the loop at the end of its step (`vidinv.interrupts.Interrupted`).
A masked edit (`masked`, a `vidinv.editing.masks.MaskedSource`) blends the edit's latent with its
source branch's after every step (docs/methods.md §8); that branch's calls are its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vidinv import interrupts
from vidinv.attention import run_unet
from vidinv.callbacks import Step, StepCallback
from vidinv.editing.injection import RowLayout
from vidinv.editing.methods import EditResult, EditStats
from vidinv.errors import VidinvError
from vidinv.guidance import guide, prompt_rows
from vidinv.inversion.api import record_model, text_size
from vidinv.inversion.denoiser import ControlledCall
from vidinv.inversion.flow_denoiser import calls_adapter, flow_rows
from vidinv.inversion.methods import get_inversion_method
from vidinv.inversion.samplers import Sampler
from vidinv.inversion.timesteps import work_dtype
from vidinv.models.offload import execution_device
from vidinv.models.text import TextConditioning

SOURCE_KINDS = ("reconstructed", "record", "inversion")


@dataclass(kw_only=True)
class BranchEditStats(EditStats):
    """The stats of every edit sampled by `sample_edit` (PnP, TokenFlow, FateZero); `extra` holds
    the denoiser's `extra_stats()`, then what the method adds."""

    start_step: int  # the first step (T_skip for an edit-friendly record)
    source_branch: str | None  # SourceBranch.kind
    source_steps: int  # steps the source rows ran
    edit_rows: int  # prompt rows of the edit branch (uncond?, cond)


@dataclass
class SourceBranch:
    kind: str | None  # one of SOURCE_KINDS, or None: no source rows
    until: int = 0  # the source rows run at steps i < until

    def active(self, i: int) -> bool:
        return self.kind is not None and i < self.until


class EditDenoiser(ControlledCall):
    """m(z, t) for the stacked branches z (k f c h w): k = 2 (source, edit) while the source is
    active, else 1 (edit); one batched UNet call; returns the guided predictions of the branches a
    sampler steps: (source, edit) for a reconstructed source, else the edit's alone (1 f c h w)
    (the rows of a "record" or "inversion" source are only read by the hooks).
    Rows are `TextConditioning`s; `control` acts on the edit rows (and the source rows when
    `source_control`)."""

    def __init__(
        self,
        unet,
        sampler: Sampler,
        source: SourceBranch,
        *,
        source_rows,
        source_guidance: float,
        edit_rows,
        edit_guidance: float,
        hook,
        chunk: int | None,
        control=None,
        source_control: bool = False,
    ):
        self.unet, self.table, self.source, self.hook, self.chunk = unet, sampler.table, source, hook, chunk
        self.source_rows, self.source_guidance = source_rows, source_guidance
        self.edit_rows, self.edit_guidance = edit_rows, edit_guidance
        self.control, self.source_control = control, source_control
        self.frame_calls = 0

    def row_control(self, n_source: int, n_edit: int):
        """The control of a batch of `n_source` source rows and `n_edit` edit rows."""
        return self.current_control([self.source_control] * n_source + [True] * n_edit)

    def __call__(self, z: torch.Tensor, t) -> torch.Tensor:
        x = z.to(device=execution_device(self.unet), dtype=self.unet.dtype)
        step = self.table.index_of(t)
        with_source = len(x) == 2
        n_source = len(self.source_rows) if with_source else 0
        n_edit = len(self.edit_rows)
        rows = [0] * n_source + [len(x) - 1] * n_edit  # the branch of each condition row
        text = type(self.edit_rows).cat([self.source_rows, self.edit_rows]) if with_source else self.edit_rows
        self.hook.set_step(step, RowLayout.for_branches(n_source, n_edit))
        stepped = with_source and self.source.kind == "reconstructed"  # the only source rows a sampler steps

        def guided(part: torch.Tensor) -> torch.Tensor:
            """One pass's predictions (rows n ...) -> the guided branches it keeps (k n ...)."""
            part = part.to(z.dtype)
            edit = guide(part[n_source:], self.edit_guidance)
            if not stepped:
                return edit[None]
            return torch.stack([guide(part[:n_source], self.source_guidance), edit])

        return self.run(x, rows, t, step, text.to(x.device), guided)

    def run(self, branches: torch.Tensor, rows: list[int], t, step: int, text, reduce=None) -> torch.Tensor:
        """Predictions of the condition rows (row r runs branch rows[r] of `branches` (k f c h w),
        with the text conditioning row r of `text`) at step `step`, each pass reduced by `reduce`:
        one chunked UNet call in the current orientation; subclasses may run several passes, e.g.
        TokenFlow's keyframe and propagation passes."""
        control = self.row_control(len(rows) - len(self.edit_rows), len(self.edit_rows))
        pred = self.call_unet(branches, t, text, rows=rows, control=control, chunk=self.chunk, reduce=reduce)
        self.frame_calls += len(rows) * branches.shape[1]
        return pred

    def call_unet(self, branches, t, text, *, rows, control, chunk, reduce=None, before_pass=None) -> torch.Tensor:
        """One `run_unet` call on `branches` in the current orientation (FreeInv's transform per pass)."""
        return run_unet(
            self.unet,
            branches,
            t,
            text,
            chunk=chunk,
            rows=rows,
            control=control,
            transform=self.orientation,
            reduce=reduce,
            before_pass=before_pass,
        )

    def extra_stats(self) -> dict:
        """What a subclass adds to EditResult.stats.extra."""
        return {}


class FlowEditDenoiser(EditDenoiser):
    """The EditDenoiser of a flow transformer (SD3, Flux): the stacked rows' velocities in one
    chunked `run_flow` call (rows are `FlowCondition`s; Flux's guidance is embedded per row)."""

    def __init__(self, transformer, *args, models, **kwargs):
        super().__init__(transformer, *args, **kwargs)
        self.models = models
        if self.control is not None:
            raise VidinvError("model.controlnet: ControlNet is not supported on flow models (SD3, Flux)")

    def run(self, branches: torch.Tensor, rows: list[int], t, step: int, cond, reduce=None) -> torch.Tensor:
        from vidinv.attention.flow_runner import run_flow

        pred = run_flow(
            self.models, branches, t, cond, chunk=self.chunk, rows=rows, transform=self.orientation, reduce=reduce
        )
        self.frame_calls += len(rows) * branches.shape[1]
        return pred


def model_rows(models, prompt: str, guidance: float, negative: str = "", *, size=None):
    """(rows, CFG scale) of a prompt for the model: `TextConditioning`s for a UNet (`size`: SDXL's
    size conditioning), `FlowCondition`s for a flow transformer (Flux: the guidance embedded)."""
    if calls_adapter(models):  # a transformer called through its adapter (flow, CogVideoX)
        return flow_rows(models, prompt, guidance, negative)
    return prompt_rows(models, prompt, guidance, negative, size=size)


def edit_rows(models, config, size=None) -> tuple[TextConditioning, float]:
    """The edit branch's rows: the target prompt against the negative prompt, edit guidance;
    `size` (H, W) pixels: SDXL's size conditioning."""
    ed = config.edit
    return model_rows(models, ed.target_prompt, ed.guidance_scale, ed.negative_prompt, size=size)


def source_rows(models, record, kind: str | None) -> tuple[TextConditioning, float]:
    """The source rows of `kind`: the record's guided rows for a reconstruction, else the cond row."""
    size = text_size(models, record.latents)
    if kind == "reconstructed":
        return model_rows(models, record.source_prompt, record.guidance_scale, size=size)
    return model_rows(models, record.source_prompt, 1.0, size=size)


def build_denoiser(
    models, record, config, sampler, source: SourceBranch, hook, *, denoiser=EditDenoiser, control=None, **extra
):
    """The edit's denoiser for `record`: source rows of `source.kind`, the configured edit rows,
    ControlNet `control` (on the source rows too when the record's inversion was controlled)."""
    rows, guidance = source_rows(models, record, source.kind)
    target_rows, target_guidance = edit_rows(models, config, text_size(models, record.latents))
    if calls_adapter(models):  # a transformer (flow, CogVideoX): its predictions through run_flow
        if denoiser is not EditDenoiser:
            raise VidinvError(f"edit.method: {config.edit.method} runs on UNet models (SD 1.x/2.x, SDXL)")
        denoiser, extra = FlowEditDenoiser, {**extra, "models": models}
    return denoiser(
        models.denoiser,
        sampler,
        source,
        source_rows=rows,
        source_guidance=guidance,
        edit_rows=target_rows,
        edit_guidance=target_guidance,
        hook=hook,
        chunk=config.runtime.unet_chunk,
        control=control,
        source_control=bool(getattr(record, "control", False)) and control is not None,
        **extra,
    )


def source_latent(sampler: Sampler, source: SourceBranch, i: int) -> torch.Tensor:
    """The source rows' latent at step i when it is read, not sampled (see the module docstring)."""
    if source.kind == "record":
        return sampler.record.latents[i]
    return sampler.inversion_latent(i)


@torch.no_grad()
def sample_edit(
    models,
    record,
    config,
    denoiser: EditDenoiser,
    *,
    progress=False,
    callback: StepCallback | None = None,
    masked=None,
) -> EditResult:
    """Run the edit loop (module docstring) with `denoiser.hook` active; the stats every method reports.
    `masked` (a `vidinv.editing.masks.MaskedSource`): after every step the edit's latent is blended
    with that source branch's, z <- m z + (1 - m) z_source (docs/methods.md §8)."""
    _, sampler, _ = record_model(models, record, config, denoiser.control)
    source = denoiser.source
    model = get_inversion_method(record.method)(config.inversion).wrap(denoiser, record, sampler.table)
    start = sampler.default_start(config.edit.skip)
    n = len(sampler.table)
    z = record.latents[start].to(device=models.device)
    z = z.to(work_dtype(z.dtype))
    # the branches (source?, edit) live in one buffer, written in place: no per-step stack of the clip
    branches = z.new_empty((2 if source.kind else 1, *z.shape))
    branches[:] = z
    del z
    reconstructed = source.kind == "reconstructed"
    if masked is not None:
        masked.begin(start, models.device)
    started = time.perf_counter()
    with denoiser.hook, interrupts.deferred():
        for i in tqdm(range(start, n), total=n - start, desc="edit", disable=not progress, leave=False):
            t = sampler.table.timesteps[i]
            if source.active(i):
                if not reconstructed:
                    branches[0] = source_latent(sampler, source, i)
                pred = model(branches, t)
                if reconstructed:
                    branches[0] = sampler.step(branches[0], pred[0], i)
            else:
                if len(branches) == 2:  # the source branch stopped: only the edit's latents are kept
                    branches, reconstructed = branches[1:].clone(), False
                pred = model(branches[-1:], t)
            z = sampler.step(branches[-1], pred[-1], i)
            del pred
            if masked is not None:  # outside the mask, the source branch's latent of this step
                z = masked.after_step(z, i, t)
            branches[-1] = z
            if callback is not None:
                callback(Step("edit", i, n, sampler.table.t(i), z))
            del z
            if interrupts.requested():  # a first Ctrl-C: stop at this step boundary
                raise interrupts.Interrupted("edit", i + 1 - start, n - start)
    z_source = branches[0] if reconstructed else None  # the reconstruction, when it ran to the end
    # the edit's latents in their own storage: a view of the two-row buffer would hold the source's
    # latents as long as the edit's (the edit job keeps them through the decode; the source only here)
    z = branches[-1] if len(branches) == 1 else branches[-1].clone()
    if models.device.type == "cuda":
        torch.cuda.synchronize(models.device)
    extra = denoiser.extra_stats()
    if masked is not None:
        extra["mask"] = masked.describe()
    stats = BranchEditStats(
        edit_s=round(time.perf_counter() - started, 4),
        frame_calls=denoiser.frame_calls + (0 if masked is None else masked.frame_calls),
        start_step=start,
        source_branch=source.kind,
        source_steps=max(0, min(source.until, n) - start) if source.kind else 0,
        edit_rows=len(denoiser.edit_rows),
        extra=extra,
    )
    return EditResult(latents=z, source_latents=z_source, stats=stats)
