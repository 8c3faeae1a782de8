"""The inversion record: everything needed to regenerate (or edit) a clip from its inversion.

Saved as a folder (default `runtime.output_dir/inversion/`):

    record.json          method, timesteps, transform schedule, scheduler config, prompt, guidance,
                         seed, noise mode, fingerprint, stats
    tensors.safetensors  latents (N+1, f, c, h, w) [+ noise_maps (N, f, c, h, w) for ddpm_ef]

The folder is written under a temporary name and renamed when complete (`vidinv.outputs.atomic_path`),
so an interrupted inversion never leaves a record that looks complete.

With `runtime.record: disk` (or `auto` past `runtime.record_limit_mb`) the tensors never sit in
memory whole: the inversion writes each step into the temporary folder's tensors file as it is
computed (`vidinv.inversion.resume.PartialRecord`, which is also its checkpoint), `save` adds
record.json and renames the folder, and `load(on_disk=True)` reads steps from the file as they
are used (`vidinv.inversion.step_file.StepFile`). Either way the file has the same bytes.

Indexing is in sampling order: step i runs at timesteps[i] (descending t); latents[i] is the latent
at timesteps[i] (latents[0] = z_T), latents[N] the input latents x_0; transforms[i] is FreeInv's
transform of step i; noise_maps[i] the noise map z of step i.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file

from vidinv.inversion.step_file import StepFile, open_tensors, write_tensors
from vidinv.outputs import atomic_path, partial_name, publish

FORMAT_VERSION = 1
JSON_NAME = "record.json"
TENSORS_NAME = "tensors.safetensors"
TENSOR_FIELDS = ("latents", "noise_maps")
PROGRESS_NAME = "progress.json"  # a record on disk while its inversion runs: the steps written so far


@dataclass
class InversionStats:
    """What the inversion cost (record.json's "stats", `to_dict`). None: not measured (a record made
    without inverting, e.g. FlowEdit's, has frame_calls 0 and no time); `extra`: what a method adds."""

    inversion_s: float | None = None
    frame_calls: int | None = None
    resumed_from_step: int | None = None  # the steps an interrupted run had done, when it was resumed
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON object of record.json: the fields measured, in this order, then `extra`."""
        named = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in named.items() if v is not None}, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> InversionStats:
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in names}, extra={k: v for k, v in data.items() if k not in names}
        )


@dataclass
class InversionRecord:
    method: str  # a registered inversion method: ddim | freeinv | mbdi | ddpm_ef | ...
    timesteps: list[int]  # sampling order (descending)
    latents: torch.Tensor  # (N+1, f, c, h, w)
    noise_maps: torch.Tensor | None = None  # ddpm_ef: (N, f, c, h, w)
    transforms: list[str] = field(default_factory=list)  # per step; "id" everywhere unless freeinv
    group: list[str] = field(default_factory=lambda: ["id"])  # the transform group (MBDI averages over it)
    source_prompt: str = ""
    guidance_scale: float = 1.0
    seed: int = 0
    noise: str = "shared"  # ddpm_ef: per-step noise shared by all frames or independent
    scheduler_config: dict = field(default_factory=dict)
    fingerprint: str = ""
    stats: InversionStats = field(default_factory=InversionStats)  # a dict is read as one
    sampler: str = ""  # the step rule (vidinv.registry.SAMPLERS); "" = the method's
    prediction_type: str = "epsilon"  # the model's parametrisation (eps, v or x0)
    control: bool = False  # the inversion's model had ControlNet residuals (inversion.control)

    def __post_init__(self):
        if isinstance(self.stats, dict):  # record.json's
            self.stats = InversionStats.from_dict(self.stats)
        if not self.sampler:
            from vidinv.registry import INVERSION_METHODS

            self.sampler = INVERSION_METHODS.get(self.method).sampler if self.method in INVERSION_METHODS else "ddim"

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def z_T(self) -> torch.Tensor:
        return self.latents[0]

    @property
    def x0(self) -> torch.Tensor:
        return self.latents[-1]

    def transform_at(self, i: int) -> str:
        """The transform of step i (for the edit's source branch)."""
        return self.transforms[i]

    def metadata(self) -> dict:
        # field by field: asdict would deep-copy the tensors (the whole record) only to drop them
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in TENSOR_FIELDS}
        data["stats"] = self.stats.to_dict()
        data["format_version"] = FORMAT_VERSION
        data["shape"] = list(self.latents.shape)
        return data

    @property
    def on_disk(self) -> bool:
        """Whether the tensors are read from the record's file as they are used."""
        return isinstance(self.latents, StepFile)

    def save(self, folder: str | Path) -> Path:
        """Write the record folder atomically (replacing an older record there). A record written
        on disk step by step (in `partial_name(folder)`) gets its record.json and is renamed."""
        folder = Path(folder)
        if self.on_disk:
            return self._publish(folder)
        tensors = {"latents": self.latents.detach().cpu().contiguous()}
        if self.noise_maps is not None:
            tensors["noise_maps"] = self.noise_maps.detach().cpu().contiguous()
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            write_tensors(tmp / TENSORS_NAME, tensors, {"fingerprint": self.fingerprint})
            self._write_json(tmp)
        return folder

    def _write_json(self, folder: Path) -> None:
        (folder / JSON_NAME).write_text(json.dumps(_jsonable(self.metadata()), indent=2) + "\n", encoding="utf-8")

    def _publish(self, folder: Path) -> Path:
        staging = self.latents.path.parent
        if staging != partial_name(folder):
            raise ValueError(f"{self.latents.path}: a record on disk is saved from {partial_name(folder)}")
        self.latents.flush()
        (staging / PROGRESS_NAME).unlink(missing_ok=True)  # the checkpoint's; a complete record has none
        self._write_json(staging)
        publish(staging, folder)
        self.latents.moved_to(folder / TENSORS_NAME)  # noise maps share the file
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, on_disk: bool = False) -> InversionRecord:
        """The record in `folder`; `on_disk`: its tensors read from the file step by step."""
        folder = Path(folder)
        data = json.loads((folder / JSON_NAME).read_text(encoding="utf-8"))
        if data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{folder}: record format is not version {FORMAT_VERSION}")
        data.pop("shape", None)
        path = str(folder / TENSORS_NAME)
        tensors = open_tensors(path) if on_disk else load_file(path)
        return cls(latents=tensors["latents"], noise_maps=tensors.get("noise_maps"), **data)


def record_bytes(tensor_steps: dict[str, int], latent_bytes: int) -> int:
    """The record's tensor bytes: the steps of its tensors (`Sampler.tensor_steps`) of `latent_bytes` each."""
    return sum(tensor_steps.values()) * latent_bytes


def keeps_on_disk(runtime, nbytes: int) -> bool:
    """Whether a record of `nbytes` is read and written on disk step by step (`runtime.record`)."""
    return runtime.record == "disk" or (runtime.record == "auto" and nbytes > runtime.record_limit_mb * 2**20)


def load_if_matching(folder: str | Path, fingerprint: str, *, on_disk: bool = False) -> InversionRecord | None:
    """The record in `folder` if it is complete and was made from the same config and input; else None."""
    folder = Path(folder)
    if not (folder / JSON_NAME).is_file() or not (folder / TENSORS_NAME).is_file():
        return None
    try:
        meta = json.loads((folder / JSON_NAME).read_text(encoding="utf-8"))
        if meta.get("fingerprint") != fingerprint or meta.get("format_version") != FORMAT_VERSION:
            return None
        return InversionRecord.load(folder, on_disk=on_disk)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tensor_digest(x: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes (on the CPU)."""
    x = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}".encode())
    h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()


def fingerprint(fields: dict, latents: torch.Tensor) -> str:
    """sha256 of the config-relevant fields (JSON) and of the input latents."""
    text = json.dumps(_jsonable(fields), sort_keys=True)
    return hashlib.sha256((text + "|" + tensor_digest(latents)).encode()).hexdigest()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
