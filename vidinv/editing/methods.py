"""Edit methods: the `EditMethod` and `Capture` protocols and the registry.

The pipeline (`VideoEditor.edit`, the edit job) calls, in this order:

    method = get_edit_method(name)(models, config)
    method.check()                  errors in the edit's settings, before the inversion runs
    record = method.source_record(latents)   inversion-free methods: the record without inverting
    captures = method.captures(shape)   what the inversion of latents of `shape` (f c h w) must
                                    capture for this edit (a list of `Capture`s; none for most)
    ... the inversion runs with the captures entered; each gets finish(record) ...
    result = method.edit(record, progress=..., callback=...)     -> EditResult (.stats: EditStats)

A method's own state (FateZero's attention store) lives in the method object, keyed by the
record's fingerprint; nothing is attached to the record. Register a method with
`register_edit_method(name, cls)` or an entry point in the group `vidinv.edit_methods`
(see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import torch

from vidinv.callbacks import StepCallback
from vidinv.registry import EDIT_METHODS, runs_on_video_model


@dataclass(kw_only=True)
class EditStats:
    """What an edit cost and how it ran: metrics.json's "edit" entries (`to_dict`). A method puts
    what is its own (FateZero's store, TokenFlow's keyframes, FlowEdit's n_max) in `extra`."""

    edit_s: float | None = None  # None: not measured (the pipeline times the call)
    frame_calls: int  # UNet (transformer) frame-calls of the edit
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The named fields in their order (edit_s only when measured), then `extra`."""
        named = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if named["edit_s"] is None:
            del named["edit_s"]
        return {**named, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> EditStats:
        """A plug-in's stats given as a dict: frame_calls (required) and edit_s, the rest `extra`."""
        names = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**{k: v for k, v in data.items() if k in names}, extra=extra)


@dataclass
class EditResult:
    """Edited latents (f c h w); the source branch's final latents when it ran to the end (else
    None); and what the edit cost (`EditStats`; a dict is read as one)."""

    latents: torch.Tensor
    source_latents: torch.Tensor | None = None
    stats: EditStats | None = None

    def __post_init__(self):
        if isinstance(self.stats, dict):
            self.stats = EditStats.from_dict(self.stats)


class Capture:
    """Something captured during the inversion's UNet calls and kept beside the record.

    A context manager entered around the inversion (attaching itself to the UNet), then
    `finish(record)`; `save(folder)` after the record is saved there; `load(folder, record)`
    when a matching record is reused: True if what it holds for that record was loaded.
    """

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def finish(self, record) -> None:
        """The inversion is done: key what was captured to `record`."""

    def save(self, folder: str | Path) -> None:
        """Write what was captured beside the record in `folder`."""

    def load(self, folder: str | Path, record) -> bool:
        return True


class EditMethod:
    """Base class of edit methods; `edit` is the one method a plug-in must implement."""

    name: ClassVar[str] = ""
    # the dataclass of the method's own settings, the config section `edit.NAME` (NAME: the name it
    # is registered as); its `choices` (field -> allowed values) and `check(prefix)` are validated
    # with the config; None: no section
    settings: ClassVar[type | None] = None
    inversion_free: ClassVar[bool] = False  # makes its record without inverting (`source_record`)
    captures_in_inversion: ClassVar[bool] = False  # its `captures` may capture during the inversion
    # the method applies `control` (ControlNet conditions of the clip) in its UNet calls; the
    # pipeline refuses a ControlNet for a method that does not
    uses_control: ClassVar[bool] = False
    flow_models: ClassVar[bool] = False  # runs on flow-matching frame models (SD3, Flux)
    unet_models: ClassVar[bool] = True  # runs on UNet models (SD 1.x/2.x, SDXL)
    video_models: ClassVar[bool] = False  # runs on native video models (Wan 2.1), whose latent frames are 4 frames
    # the method confines its edit to `self.mask` (edit.mask / mask_words: a `vidinv.editing.masks.EditMask`,
    # set by the pipeline before `check`); the pipeline refuses a mask for a method that does not
    masks: ClassVar[bool] = False

    def __init__(self, models, config):
        self.models, self.config = models, config
        self.control = None  # vidinv.models.controlnet.Control of the clip, set by the pipeline before edit()
        self.mask = None  # vidinv.editing.masks.EditMask of the run (masks = True), set by the pipeline

    @classmethod
    def predicted_frame_calls(cls, config, frames: int, latent_hw: tuple[int, int], **context) -> int | None:
        """Model frame-calls the edit of `frames` (latent) frames will make (`vidinv plan`, before any
        model loads); None: the method does not say (the plan leaves the edit's count out).
        `context`: `family` (the flow model's family name, None for UNets) and `store_in_memory`
        (`store_in_memory` of the predicted store). The shared arithmetic: `vidinv.inversion.costs`."""
        return None

    @classmethod
    def predicted_activation_bytes(cls, config, unet, text, frames: int, latent_hw: tuple[int, int], dtype) -> int:
        """Peak device bytes of the method's widest UNet moment beyond the run's chunked call, on
        fake modules inside `vidinv.planning.memory.fake_mode()` (TokenFlow's keyframe pass); 0: none."""
        return 0

    @classmethod
    def predicted_store_bytes(cls, config, unet, family, frames: int, latent_hw: tuple[int, int]) -> int | None:
        """Bytes the method keeps beside the record (FateZero's attention store) for the UNet `unet`
        (fake modules) of `family` (a `ModelFamily`); None: it keeps nothing."""
        return None

    @classmethod
    def store_in_memory(cls, config, store_bytes: int) -> bool:
        """Whether that store is held in host memory during the run (else recomputed)."""
        return False

    def check(self) -> None:
        """Fail on settings this model cannot run, before the inversion (one-line VidinvError)."""

    def source_record(self, latents: torch.Tensor):
        """A record of the source latents made without inverting (inversion-free methods, e.g.
        FlowEdit), or None: the inversion runs."""
        return None

    def captures(self, shape: tuple[int, ...]) -> list[Capture]:
        """What the inversion of latents of `shape` (f c h w) must capture for this edit."""
        return []

    def edit(self, record, *, progress: bool = False, callback: StepCallback | None = None) -> EditResult:
        """Edit the clip of `record` towards `config.edit.target_prompt`. `callback(Step("edit", i,
        total, t, latents))` (`vidinv.callbacks.Step`) is called after every denoising step with the
        edit branch's latents."""
        raise NotImplementedError


def check_model_kind(method: EditMethod, models) -> None:
    """A one-line error when a UNet edit method meets a flow model (SD3, Flux), or a frame model's
    method a native video model (Wan)."""
    from vidinv.errors import VidinvError
    from vidinv.inversion.flow import is_flow_scheduler

    if getattr(models, "video", False):
        check_video_method(method, getattr(models, "family", None))
        return
    if is_flow_scheduler(models.scheduler) and not method.flow_models:
        raise VidinvError(
            f"edit.method: {method.name} runs on UNet models (SD 1.x/2.x, SDXL); on SD3 / Flux use flowedit or pnp"
        )


def check_video_method(method: type[EditMethod] | EditMethod, family) -> None:
    """A one-line error, naming the methods that do, when `method` does not run on a native video model
    of `family` (its record: `vidinv plan` checks before anything loads)."""
    from vidinv.errors import VidinvError

    if runs_on_video_model(method, family):
        return
    usable = [n for n in EDIT_METHODS.names() if runs_on_video_model(EDIT_METHODS.get(n), family)]
    needs = "needs a flow-matching model" if method.video_models else "runs on frame models"
    raise VidinvError(
        f"edit.method: {method.name} {needs}; on {getattr(family, 'display', 'Wan')} (a native video model)"
        f" use {' or '.join(usable) or 'flowedit'}"
    )


def register_edit_method(name: str, cls: type[EditMethod], *, replace: bool = False) -> None:
    """Make `cls` available as `edit.method: name` (config, CLI, API)."""
    EDIT_METHODS.register(name, cls, replace=replace)


def get_edit_method(name: str) -> type[EditMethod]:
    return EDIT_METHODS.get(name)
