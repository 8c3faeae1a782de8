"""invert / reconstruct a clip's latents with the inversion method the config names.

    record = invert(models, latents, config)          # latents (f, c, h, w) from encode_frames
    x0 = reconstruct(models, record, config)          # (f, c, h, w), source prompt, same guidance
    model, sampler = record_model(models, record, config)   # what the record was made with (for editing)

`invert_or_load(models, latents, config, folder)` reuses a record whose fingerprint (config fields
that change the result + the input latents) matches, and otherwise inverts and saves.

`captures` (both functions): objects that capture something during the inversion's UNet calls and
are kept beside the record (FateZero's attention store); see `vidinv.editing.methods.Capture`.
Each is a context manager entered around the inversion, then gets `finish(record)`; with a
record folder, `save(folder)` after the record is saved, and `load(folder, record) -> bool` when a
matching record is reused (False for any capture: the inversion runs again with the captures,
rewriting the same record).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vidinv import interrupts
from vidinv.attention.windows import WindowLog, logging_windows, window_progress, windows_of
from vidinv.callbacks import Step, StepCallback
from vidinv.config import Config
from vidinv.errors import VidinvError, check_finite
from vidinv.inversion.costs import inversion_method
from vidinv.inversion.denoiser import GuidedModel
from vidinv.inversion.flow import FlowTable, flow_table_for, is_flow_scheduler, record_sampler
from vidinv.inversion.flow_denoiser import FlowGuidedModel, calls_adapter
from vidinv.inversion.methods import get_inversion_method
from vidinv.inversion.record import (
    InversionRecord,
    InversionStats,
    fingerprint,
    keeps_on_disk,
    load_if_matching,
    record_bytes,
)
from vidinv.inversion.resume import Checkpoint, PartialRecord, step_hook, steps_done, window_checkpoints
from vidinv.inversion.samplers import Sampler, sampler_for
from vidinv.inversion.step_file import StepFile
from vidinv.inversion.timesteps import StepTable, step_table, work_dtype
from vidinv.models.vae import pixel_size
from vidinv.registry import SAMPLERS

log = logging.getLogger("vidinv")


@dataclass
class ReconstructionStats:
    """What a reconstruction cost: `reconstruct(..., stats=ReconstructionStats())` fills it."""

    reconstruction_s: float = 0.0
    frame_calls: int = 0
    start_step: int = 0  # the step it started from (latents[start_step] of the record)


def prediction_type_of(models) -> str:
    """The model's parametrisation: its family's (the scheduler config's, or `model.prediction_type`),
    epsilon by default."""
    own = getattr(models, "prediction_type", None) or getattr(getattr(models, "family", None), "prediction_type", None)
    return own or models.scheduler.config.get("prediction_type", "epsilon")


def inversion_control(record_or_config, control):
    """The ControlNet conditions the inversion's model uses: `control` when the inversion is
    controlled (`inversion.control`, saved as `record.control`), else None."""
    wanted = getattr(record_or_config, "control", False)
    if not wanted:
        return None
    if control is None:
        raise VidinvError(
            "inversion.control: the inversion uses ControlNet, but no condition images were given"
            " (model.controlnet and edit.control, from the source frames)"
        )
    return control


def text_size(models, latents: torch.Tensor) -> tuple[int, int]:
    """(H, W) in pixels of the clip's latents: SDXL's size conditioning."""
    return pixel_size(models.vae, latents)


def scheduler_config(scheduler) -> dict:
    """The scheduler's registered config without diffusers' bookkeeping keys (`_use_default_values` is
    built from a set, so its order changes from process to process)."""
    return {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


def fingerprint_fields(models, config: Config, latents: torch.Tensor | None = None) -> dict:
    """The config fields (and model facts) an inversion's result depends on; with the clip's
    `latents`, a video model's temporal windows when the clip has more than one (one window is the
    unwindowed run, bit for bit; a clip that is not whole windows: a one-line error)."""
    inv, m = config.inversion, config.model
    method = inversion_method(config)
    windows = windows_of(models)
    windowed = windows is not None and latents is not None and len(windows.slices(latents.shape[0])) > 1
    return {
        "method": inv.method,
        "steps": inv.steps,
        "source_prompt": inv.source_prompt,
        "guidance_scale": method.guidance(),
        "model": {
            "pretrained": m.pretrained,
            "dtype": str(models.dtype),
            "frame_attention": m.frame_attention,
            "keyframes": m.keyframes,
            "keyframe_stride": m.keyframe_stride,
            "attention_group": m.attention_group,
            **({"lora": list(models.loras)} if getattr(models, "loras", None) else {}),  # file hash, scale, fused
        },
        "scheduler": scheduler_config(models.scheduler),
        **method.fingerprint_fields(),
        **_control_fields(config),
        **({"window": [windows.size, windows.overlap]} if windowed else {}),
    }


def _control_fields(config: Config) -> dict:
    """The ControlNet settings of a controlled inversion (`inversion.control`); none otherwise."""
    if not config.inversion.control:
        return {}
    ed = config.edit
    return {"control": {"controlnet": config.model.controlnet, "kinds": ed.control, "scales": ed.controlnet_scale}}


def denoiser_class(models):
    """The model-callable class of the model: an adapter-called transformer's (flow, CogVideoX) or the UNet's."""
    return FlowGuidedModel if calls_adapter(models) else GuidedModel


def table_for(models, record_or_steps, latents: torch.Tensor | None = None) -> StepTable | FlowTable:
    """The step table of the model's scheduler (a flow model's sigma grid, sized by the latents)."""
    if isinstance(record_or_steps, InversionRecord):
        steps, latents = record_or_steps.steps, record_or_steps.latents
    else:
        steps = int(record_or_steps)
    if is_flow_scheduler(models.scheduler):
        return flow_table_for(models, steps, latents)
    return step_table(models.scheduler, steps)


def record_model(models, record: InversionRecord, config: Config, control=None) -> tuple[object, Sampler, GuidedModel]:
    """(model, sampler, plain model) of the record: its prompt and guidance seen through its method
    (FreeInv's transform of each step, MBDI's group mean), and its step rule; ControlNet `control`
    when the record's inversion was controlled."""
    table = table_for(models, record)
    plain = denoiser_class(models).for_prompt(
        models,
        record.source_prompt,
        record.guidance_scale,
        chunk=config.runtime.unet_chunk,
        size=text_size(models, record.latents),
        control=inversion_control(record, control),
    )
    method = get_inversion_method(record.method)(config.inversion)
    return method.wrap(plain, record, table), sampler_for(record, table), plain


@torch.no_grad()
def invert(
    models,
    latents: torch.Tensor,
    config: Config,
    *,
    progress: bool = False,
    captures=(),
    checkpoint=None,
    control=None,
    callback: StepCallback | None = None,
) -> InversionRecord:
    """Invert the clip's latents (f, c, h, w) with config.inversion; returns the record (tensors on the CPU).

    `captures` are entered around the inversion's UNet calls and get `finish(record)` (module docstring).
    `control` (`vidinv.models.controlnet.Control`): the ControlNet conditions, used when
    `inversion.control` is set. `checkpoint` (a `vidinv.inversion.resume.Checkpoint`) resumes an interrupted run and saves
    the state as the inversion goes. A first Ctrl-C stops it after the current step (the
    checkpoint saved at once) with `vidinv.interrupts.Interrupted`; a second interrupts at once.
    `callback(Step("inversion", steps done - 1, N, t, None))` is called after every inversion step.
    """
    inv = config.inversion
    method = inversion_method(config)
    table = table_for(models, inv.steps, latents)
    guidance = method.guidance()
    model = denoiser_class(models).for_prompt(
        models,
        inv.source_prompt,
        guidance,
        chunk=config.runtime.unet_chunk,
        size=text_size(models, latents),
        control=inversion_control(inv, control),
    )
    x0 = latents.to(device=models.device, dtype=work_dtype(latents.dtype))
    record = InversionRecord(
        method=inv.method,
        sampler=record_sampler(method, models.scheduler),
        prediction_type=prediction_type_of(models),
        timesteps=table.to_list(),
        latents=torch.empty(0),
        source_prompt=inv.source_prompt,
        guidance_scale=guidance,
        seed=inv.seed,
        noise=inv.noise,
        scheduler_config=scheduler_config(models.scheduler),
        fingerprint=fingerprint(fingerprint_fields(models, config, latents), latents),
        control=bool(inv.control),
    )
    method.prepare(record, tuple(x0.shape[-2:]))
    sampler = sampler_for(record, table)
    start = time.perf_counter()
    specs = {name: (x0.dtype, (steps, *x0.shape)) for name, steps in sampler.tensor_steps(len(table)).items()}
    out = checkpoint.storage(specs) if checkpoint is not None else None  # the record's file, or memory
    done, replay = WindowLog.split(checkpoint.load() if checkpoint is not None else None)
    on_step = with_callback(step_hook(checkpoint, len(table)), callback, steps_done(done), table)
    window_log = None
    if windows_of(models) is not None and windows_of(models).count(x0.shape[0]) > 1:  # window boundaries checkpoint
        first = lambda: {"latents": x0[None] if out is None else out["latents"][len(table) :]}  # noqa: E731
        window_log, on_step = window_checkpoints(checkpoint, len(table), first, replay, on_step, x0.device)
    with contextlib.ExitStack() as stack:
        for capture in captures:
            stack.enter_context(capture)
        stack.enter_context(interrupts.deferred())
        stack.enter_context(window_progress(progress))
        stack.enter_context(logging_windows(window_log))
        tensors = sampler.invert(
            method.wrap(model, record, table),
            x0,
            progress=progress,
            desc=f"{inv.method} inversion",
            done=done,
            on_step=on_step,
            out=out,
            **method.inversion_inputs(x0, len(table)),
        )
        _sync(models.device)
    check_finite(tensors["latents"][0], "inversion", models.dtype)  # z_T: every step's error reaches it
    record.latents = on_host(tensors["latents"])
    record.noise_maps = on_host(tensors["noise_maps"]) if "noise_maps" in tensors else None
    record.stats = InversionStats(
        inversion_s=round(time.perf_counter() - start, 4),
        frame_calls=model.frame_calls - (window_log.replayed_calls if window_log is not None else 0),
        resumed_from_step=steps_done(done) or None,
    )
    for capture in captures:
        capture.finish(record)
    return record


def on_host(tensor):
    """A record tensor where the record keeps it: a file stays a file, a tensor goes to the CPU."""
    return tensor if isinstance(tensor, StepFile) else tensor.cpu()


def with_callback(on_step, callback: StepCallback | None, done: int, table):
    """The inversion's `on_step` that also calls `callback(Step(...))` after every step: the k-th
    step done (k from 0) climbs to the level of table step N - 1 - k."""
    if callback is None:
        return on_step
    steps, total = itertools.count(done), len(table)

    def both(state) -> None:
        on_step(state)
        k = next(steps)
        callback(Step("inversion", k, total, table.t(total - 1 - k), None))

    return both


@torch.no_grad()
def reconstruct(
    models,
    record: InversionRecord,
    config: Config,
    *,
    start: int | None = None,
    progress: bool = False,
    stats: ReconstructionStats | None = None,
    control=None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Regenerate the clip's latents (f, c, h, w) from the record with its own prompt and guidance.

    `start` is the first step (default: the sampler's, T_skip = edit.skip for ddpm_ef, else 0);
    the latent at that step is taken from the record. Returns latents in the record's dtype on
    models.device. `stats`, when given, is filled in (`ReconstructionStats`). `control`:
    the ControlNet conditions, needed when the record's inversion was controlled.
    `callback(Step("reconstruction", i, N, t_i, latents))` is called after every step i.
    """
    model, sampler, plain = record_model(models, record, config, control)
    if start is None:
        start = sampler.default_start(config.edit.skip)
    z = record.latents[start].to(models.device)
    t0 = time.perf_counter()
    with window_progress(progress):
        out = sampler.sample(
            model, z, start=start, progress=progress, desc=f"{record.method} reconstruction", callback=callback
        )
    _sync(models.device)
    check_finite(out, "reconstruction", models.dtype)
    if stats is not None:
        stats.reconstruction_s = round(time.perf_counter() - t0, 4)
        stats.frame_calls, stats.start_step = plain.frame_calls, start
    return out


def invert_or_load(
    models,
    latents: torch.Tensor,
    config: Config,
    folder: str | Path,
    *,
    progress: bool = False,
    captures=(),
    control=None,
    callback: StepCallback | None = None,
) -> tuple[InversionRecord, bool]:
    """(record, reused): the record in `folder` if config and input match (and every capture could
    load what it holds for it), else a new one saved there (with what the captures hold)."""
    key = fingerprint(fingerprint_fields(models, config, latents), latents)
    tensor_steps = SAMPLERS.get(inversion_method(config).sampler).tensor_steps(config.inversion.steps)
    latent_bytes = latents.numel() * work_dtype(latents.dtype).itemsize
    on_disk = keeps_on_disk(config.runtime, record_bytes(tensor_steps, latent_bytes))
    record = load_if_matching(folder, key, on_disk=on_disk)
    if record is not None:
        missing = [type(c).__name__ for c in captures if not c.load(folder, record)]
        if not missing:
            log.info("inversion record reused from %s", folder)
            return record, True
        log.info("inversion record in %s has no matching %s; recomputing", folder, ", ".join(missing))
    elif Path(folder).exists():
        log.info("inversion record in %s does not match this config or clip; recomputing", folder)
    # a partial inversion cannot carry what captures hold over its whole run: no resuming with captures
    every = None if captures else config.runtime.checkpoint_seconds
    off_reason = "what the edit method captures during the inversion cannot resume" if captures else ""
    checkpoint = (PartialRecord if on_disk else Checkpoint)(folder, key, every, off_reason=off_reason)
    try:
        record = invert(
            models,
            latents,
            config,
            progress=progress,
            captures=captures,
            checkpoint=checkpoint,
            control=control,
            callback=callback,
        )
    except BaseException:
        if not checkpoint.enabled:
            checkpoint.clear()  # a record file no rerun can resume from
        raise
    record.save(folder)
    checkpoint.clear()
    for capture in captures:
        capture.save(folder)
    return record, False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
