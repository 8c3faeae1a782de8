"""invert / reconstruct a clip's latents with the method the config names.

    record = invert(models, latents, config)          # latents (f, c, h, w) from encode_frames
    x0 = reconstruct(models, record, config)          # (f, c, h, w), source prompt, same guidance
    eps = source_eps(models, record, config)          # the eps the record was made with (for editing)

`invert_or_load(models, latents, config, folder)` reuses a record whose fingerprint (config fields
that change the result + the input latents) matches, and otherwise inverts and saves.

`hooks` (both functions): objects that capture something during the inversion's UNet calls and
travel with the record (FateZero's attention store). Each is a context manager entered around
the inversion (it attaches itself to the UNet) and may define `attach(record)` (called with the
new record), `save(folder)` (after the record is saved there) and `load(folder, record) -> bool`
(when a matching record is reused: True if what it holds for that record was loaded from the
folder; if any hook returns False the inversion runs again with the hooks, which rewrites the
same record).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from vidinv.config import Config
from vidinv.inversion import transforms as tf
from vidinv.inversion.ddim import ddim_invert, ddim_sample
from vidinv.inversion.ddpm_ef import ddpm_ef_invert, ddpm_ef_sample
from vidinv.inversion.denoiser import Denoiser
from vidinv.inversion.freeinv import FreeInvEps, GroupMeanEps
from vidinv.inversion.record import InversionRecord, fingerprint, load_if_matching
from vidinv.inversion.resume import Checkpoint
from vidinv.inversion.timesteps import StepTable, step_table, work_dtype

log = logging.getLogger("vidinv")

DDPM_EF_GUIDANCE = 3.5
EF_SKIP_FRACTION = 0.36


def guidance_for(config: Config) -> float:
    """inversion.guidance_scale, or the method's default (1.0; 3.5 for ddpm_ef)."""
    inv = config.inversion
    if inv.guidance_scale is not None:
        return float(inv.guidance_scale)
    return DDPM_EF_GUIDANCE if inv.method == "ddpm_ef" else 1.0


def skip_for(config: Config) -> int:
    """T_skip for regenerating from an edit-friendly record: edit.skip, or round(0.36 * steps)."""
    skip = config.edit.skip
    return round(EF_SKIP_FRACTION * config.inversion.steps) if skip is None else int(skip)


def prompt_rows(models, prompt: str, guidance_scale: float, uncond_prompt: str = "") -> tuple[torch.Tensor, float]:
    """(text embeddings (b l d), guidance): (uncond, cond) rows with classifier-free guidance, or
    the cond row alone with guidance 1 when g == 1 or the prompt is the unconditional one."""
    from vidinv.models import encode_prompts

    if guidance_scale != 1.0 and prompt != uncond_prompt:
        return encode_prompts(models, [uncond_prompt, prompt]), float(guidance_scale)
    return encode_prompts(models, [prompt]), 1.0


def make_denoiser(models, prompt: str, guidance_scale: float, *, chunk: int | None = 0) -> Denoiser:
    """eps(z, t) for `prompt` with CFG against the empty prompt (one pass when g == 1 or prompt == "")."""
    rows, guidance = prompt_rows(models, prompt, guidance_scale)
    if len(rows) == 2:
        uncond, cond = rows.chunk(2)
        return Denoiser(models.unet, cond, uncond, guidance, chunk=chunk)
    return Denoiser(models.unet, rows, chunk=chunk)


def scheduler_config(scheduler) -> dict:
    """The scheduler's registered config without diffusers' bookkeeping keys (`_use_default_values` is
    built from a set, so its order changes from process to process)."""
    return {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


def fingerprint_fields(models, config: Config) -> dict:
    """The config fields (and model facts) an inversion's result depends on."""
    inv, m = config.inversion, config.model
    fields = {
        "method": inv.method,
        "steps": inv.steps,
        "source_prompt": inv.source_prompt,
        "guidance_scale": guidance_for(config),
        "model": {
            "pretrained": m.pretrained,
            "dtype": str(models.dtype),
            "frame_attention": m.frame_attention,
            "keyframes": m.keyframes,
            "keyframe_stride": m.keyframe_stride,
            "attention_group": m.attention_group,
        },
        "scheduler": scheduler_config(models.scheduler),
    }
    if inv.method in ("freeinv", "mbdi"):
        fields["transforms"] = inv.transforms
    if inv.method in ("freeinv", "ddpm_ef"):
        fields["seed"] = inv.seed
    if inv.method == "ddpm_ef":
        fields["noise"] = inv.noise
    return fields


def ef_noise(shape: tuple[int, ...], steps: int, *, seed: int, shared: bool, dtype: torch.dtype) -> torch.Tensor:
    """Per-step noise n (N, f or 1, c, h, w) for edit-friendly inversion, from a seeded CPU generator.

    Drawn in ascending-t order (the order LEDITS++ draws it), stored in sampling order. `shared`
    draws one map per step for all frames.
    """
    f, *rest = shape
    generator = torch.Generator("cpu").manual_seed(int(seed))
    draws = [torch.randn((1 if shared else f, *rest), generator=generator, dtype=dtype) for _ in range(steps)]
    return torch.stack(draws[::-1])


def method_eps(eps, record: InversionRecord, table: StepTable):
    """Wrap a plain eps callable in the record's method (FreeInv schedule, MBDI group mean, or none)."""
    if record.method == "freeinv":
        return FreeInvEps(eps, table, record.transforms)
    if record.method == "mbdi":
        return GroupMeanEps(eps, record.group)
    return eps


def table_for(models, record_or_steps) -> StepTable:
    steps = record_or_steps.steps if isinstance(record_or_steps, InversionRecord) else int(record_or_steps)
    return step_table(models.scheduler, steps)


@torch.no_grad()
def invert(
    models, latents: torch.Tensor, config: Config, *, progress: bool = False, hooks=(), checkpoint=None
) -> InversionRecord:
    """Invert the clip's latents (f, c, h, w) with config.inversion; returns the record (tensors on the CPU).

    `hooks` are entered around the inversion's UNet calls and get `attach(record)` (module docstring).
    `checkpoint` (a `vidinv.inversion.resume.Checkpoint`) resumes an interrupted run and saves
    the state as the inversion goes.
    """
    inv = config.inversion
    table = table_for(models, inv.steps)
    guidance = guidance_for(config)
    eps = make_denoiser(models, inv.source_prompt, guidance, chunk=config.runtime.unet_chunk)
    x0 = latents.to(device=models.device, dtype=work_dtype(latents.dtype))
    h, w = x0.shape[-2:]
    group = list(tf.group_for(inv.transforms, h, w)) if inv.method in ("freeinv", "mbdi") else ["id"]
    schedule = tf.schedule(group, len(table), inv.seed) if inv.method == "freeinv" else ["id"] * len(table)
    record = InversionRecord(
        method=inv.method,
        timesteps=table.to_list(),
        latents=torch.empty(0),
        transforms=schedule,
        group=group,
        source_prompt=inv.source_prompt,
        guidance_scale=guidance,
        seed=inv.seed,
        noise=inv.noise,
        scheduler_config=scheduler_config(models.scheduler),
        fingerprint=fingerprint(fingerprint_fields(models, config), latents),
    )
    start = time.perf_counter()
    done = checkpoint.load() if checkpoint is not None else None
    resume = dict(on_step=checkpoint.on_step if checkpoint is not None else None)
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook)
        if inv.method == "ddpm_ef":
            noise = ef_noise(tuple(x0.shape), len(table), seed=inv.seed, shared=inv.noise == "shared", dtype=x0.dtype)
            traj, zs = ddpm_ef_invert(eps, x0, table, noise, progress=progress, done=done, **resume)
            record.noise_maps = zs.cpu()
            resumed_from = 0 if done is None else len(done["zs"])
        else:
            desc = f"{inv.method} inversion"
            done_latents = None if done is None else done["latents"]
            eps_m = method_eps(eps, record, table)
            traj = ddim_invert(eps_m, x0, table, progress=progress, desc=desc, done=done_latents, **resume)
            resumed_from = 0 if done is None else len(done_latents) - 1
        _sync(models.device)
    record.latents = traj.cpu()
    record.stats = {"inversion_s": round(time.perf_counter() - start, 4), "unet_calls": eps.calls}
    if resumed_from:
        record.stats["resumed_from_step"] = resumed_from
    for hook in hooks:
        if hasattr(hook, "attach"):
            hook.attach(record)
    return record


@torch.no_grad()
def reconstruct(
    models,
    record: InversionRecord,
    config: Config,
    *,
    start: int | None = None,
    progress: bool = False,
    stats: dict | None = None,
) -> torch.Tensor:
    """Regenerate the clip's latents (f, c, h, w) from the record with its own prompt and guidance.

    `start` is the first step (ddpm_ef default: T_skip = skip_for(config); else 0); the latent at
    that step is taken from the record. Returns latents in the record's dtype on models.device.
    `stats`, when given, receives reconstruction_s, unet_calls and start.
    """
    table = table_for(models, record)
    eps = make_denoiser(models, record.source_prompt, record.guidance_scale, chunk=config.runtime.unet_chunk)
    if start is None:
        start = skip_for(config) if record.method == "ddpm_ef" else 0
    z = record.latents[start].to(models.device)
    t0 = time.perf_counter()
    if record.method == "ddpm_ef":
        out = ddpm_ef_sample(eps, z, table, record.noise_maps, start=start, progress=progress)
    else:
        out = ddim_sample(
            method_eps(eps, record, table),
            z,
            table,
            start=start,
            progress=progress,
            desc=f"{record.method} reconstruction",
        )
    _sync(models.device)
    if stats is not None:
        stats.update(reconstruction_s=round(time.perf_counter() - t0, 4), unet_calls=eps.calls, start=start)
    return out


def source_eps(models, record: InversionRecord, config: Config):
    """(eps, table): the record's denoiser (prompt, guidance, FreeInv schedule / MBDI group) and its steps.

    For FreeInv, `eps.at_step(i)` is step i's callable and `record.transforms[i]` its transform name.
    """
    table = table_for(models, record)
    eps = make_denoiser(models, record.source_prompt, record.guidance_scale, chunk=config.runtime.unet_chunk)
    return method_eps(eps, record, table), table


def invert_or_load(
    models, latents: torch.Tensor, config: Config, folder: str | Path, *, progress: bool = False, hooks=()
) -> tuple[InversionRecord, bool]:
    """(record, reused): the record in `folder` if config and input match (and every hook could load
    what it captures for it), else a new one saved there (with what the hooks captured)."""
    key = fingerprint(fingerprint_fields(models, config), latents)
    record = load_if_matching(folder, key)
    if record is not None:
        missing = [type(h).__name__ for h in hooks if hasattr(h, "load") and not h.load(folder, record)]
        if not missing:
            log.info("inversion record reused from %s", folder)
            return record, True
        log.info("inversion record in %s has no matching %s; recomputing", folder, ", ".join(missing))
    elif Path(folder).exists():
        log.info("inversion record in %s does not match this config or clip; recomputing", folder)
    # a partial inversion cannot carry what hooks capture over its whole run: no resuming with hooks
    every = None if hooks else config.runtime.checkpoint_seconds
    checkpoint = Checkpoint(folder, key, every)
    record = invert(models, latents, config, progress=progress, hooks=hooks, checkpoint=checkpoint)
    record.save(folder)
    checkpoint.clear()
    for hook in hooks:
        if hasattr(hook, "save"):
            hook.save(folder)
    return record, False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
