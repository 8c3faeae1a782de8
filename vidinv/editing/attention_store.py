"""FateZero's attention store: the source's attention maps, captured during the inversion.

An `AttentionStore` is a `Capture` of the inversion (vidinv.editing.methods) and an `AttentionHook`
(the processors' `probs` hook point): while entered it attaches itself to the UNet's frame attention and reads the timestep of
every UNet call (a forward pre-hook), and for the layers and timesteps of its `StorePlan` it keeps
the attention probabilities of one row of the batch (`row`, default the last: the source's
conditional row), per frame, as fp16 CPU tensors (`edit.fatezero.store_dtype`; fp32 for exactness checks).
From a CUDA device each map is copied without blocking (into pinned host memory), so capturing
never waits for the device; the copies are complete after one synchronize (`ready`), which runs
before the maps are first read (`finish`, `get`, `save`):

    self-attention  (attn1): (heads, n_query, n_keys of the frame's key set)   sparse-causal: {0, i-1}
    cross-attention (attn2): (heads, n_query, 77)

keyed by (kind, timestep, occurrence, layer, frame). Maps are keyed by TIMESTEP, not by loop index:
the inversion visits the table's timesteps in ascending order, the edit in descending order, and
both look maps up by the t of the step. `occurrence` counts the UNet calls at the same t (1 per
step, except MBDI: one per group member, in the group's order, which the edit repeats). The bytes
kept are counted against `edit.fatezero.store_limit_mb`; going over raises a VidinvError at once.

On disk it lives next to the inversion record (written after it, each file atomically):

    inversion/attention_store.safetensors   the maps (fp16), metadata: fingerprint, format version
    inversion/attention_store.json          plan, fingerprint of the record, bytes, frames

and is reused only for a record with the same fingerprint whose plan covers the plan asked for.
In memory it is held by the FateZero method object that asked for it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vidinv.attention.inflate import ensure_frame_attention
from vidinv.attention.processors import AttentionHook
from vidinv.editing.methods import Capture
from vidinv.errors import VidinvError
from vidinv.outputs import atomic_path

FORMAT_VERSION = 1
STORE_FILE = "attention_store.safetensors"
STORE_JSON = "attention_store.json"
KINDS = ("self", "cross")


@dataclass(frozen=True)
class StorePlan:
    """Which maps a store holds: self-/cross-attention layer names and the timesteps of each."""

    self_layers: tuple[str, ...] = ()
    cross_layers: tuple[str, ...] = ()
    self_steps: tuple[int, ...] = ()  # timesteps
    cross_steps: tuple[int, ...] = ()
    dtype: str = "fp16"  # of the stored maps (edit.fatezero.store_dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float16 if self.dtype == "fp16" else torch.float32

    def layers(self, kind: str) -> tuple[str, ...]:
        return self.self_layers if kind == "self" else self.cross_layers

    def steps(self, kind: str) -> tuple[int, ...]:
        return self.self_steps if kind == "self" else self.cross_steps

    def kind_of(self, layer: str) -> str | None:
        if layer in self.self_layers:
            return "self"
        if layer in self.cross_layers:
            return "cross"
        return None

    @property
    def timesteps(self) -> tuple[int, ...]:
        """Every timestep with a stored map, descending (sampling order)."""
        return tuple(sorted(set(self.self_steps) | set(self.cross_steps), reverse=True))

    def covers(self, other: StorePlan) -> bool:
        """True if every map `other` asks for is in a store made with this plan."""
        return self.dtype == other.dtype and all(
            set(other.layers(k)) <= set(self.layers(k))
            and (not other.layers(k) or set(other.steps(k)) <= set(self.steps(k)))
            for k in KINDS
        )

    def to_json(self) -> dict:
        return {k: v if isinstance(v, str) else list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> StorePlan:
        return cls(**{k: v if isinstance(v, str) else tuple(v) for k, v in data.items()})


def _key(kind: str, t: int, occurrence: int, layer: str, frame: int) -> str:
    return f"{kind}/{t}/{occurrence}/{frame}/{layer}"


def _parse(name: str) -> tuple[str, int, int, str, int]:
    kind, t, occurrence, frame, layer = name.split("/", 4)
    return kind, int(t), int(occurrence), layer, int(frame)


class AttentionStore(Capture, AttentionHook):
    """The source's attention maps per (kind, timestep, occurrence, layer, frame); see the module docstring."""

    def __init__(self, plan: StorePlan, *, limit_mb: float, unet=None, attention_backend: str = "auto", row: int = -1):
        self.plan, self.row = plan, row
        self.limit_bytes = limit_mb * 2**20
        self.unet, self.attention_backend = unet, attention_backend
        self.maps: dict[tuple, torch.Tensor] = {}
        self.nbytes = 0
        self.fingerprint = ""
        self.frames = 0
        self.origin = "empty"  # inversion | loaded | replayed
        self._t: int | None = None
        self._seen: dict[tuple, int] = {}
        self._copying: torch.device | None = None  # the device of copies not yet known complete (`ready`)
        self._handle = self._pre_hook = None

    # ---- capture (context manager on the UNet) -------------------------------------------------
    def __enter__(self):
        if self.unet is None:
            raise VidinvError("attention store: no UNet to capture from")
        unet = self.unet
        self._handle = ensure_frame_attention(unet, self.attention_backend)
        self._handle.hooks.append(self)
        self._pre_hook = unet.register_forward_pre_hook(self._read_timestep, with_kwargs=True)
        self._seen = {}
        return self

    def __exit__(self, *exc):
        if self._pre_hook is not None:
            self._pre_hook.remove()
        if self._handle is not None and self in self._handle.hooks:
            self._handle.hooks.remove(self)
        self._handle = self._pre_hook = self._t = None
        return False

    def _read_timestep(self, module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self._t = int(t.flatten()[0].item()) if isinstance(t, torch.Tensor) else int(t)

    def wants_probs(self, layer: str) -> bool:
        kind = self.plan.kind_of(layer)
        return kind is not None and self._t is not None and self._t in self.plan.steps(kind)

    def probs(self, layer: str, p: torch.Tensor, frames: tuple[int, ...]) -> None:
        kind, t = self.plan.kind_of(layer), self._t
        source = p[self.row].to(self.plan.torch_dtype)  # the source's conditional row
        for q, frame in enumerate(frames):
            seen = (kind, t, layer, frame)
            occurrence = self._seen.get(seen, 0)
            self._seen[seen] = occurrence + 1
            self._add((kind, t, occurrence, layer, frame), self._to_host(source[q]))
        return None  # read only: the UNet's output is untouched

    def _to_host(self, value: torch.Tensor) -> torch.Tensor:
        """A map in its own host storage (not a view of the batch's maps). From CUDA it is copied
        without blocking (into pinned memory, complete after `ready`), so no layer of any step waits
        for the device; from any other device it is copied as it comes."""
        if value.device.type != "cuda":
            return value.cpu().clone()
        self._copying = value.device
        return value.to("cpu", non_blocking=True)

    def ready(self) -> None:
        """Wait once for the copies `probs` started (module docstring); a no-op when none is pending."""
        if self._copying is not None:
            torch.cuda.synchronize(self._copying)
        self._copying = None

    def _add(self, key: tuple, value: torch.Tensor) -> None:
        nbytes = value.numel() * value.element_size()
        if self.nbytes + nbytes > self.limit_bytes:
            raise VidinvError(
                f"FateZero attention store: {(self.nbytes + nbytes) / 2**20:.2f} MiB and counting exceeds "
                f"edit.fatezero.store_limit_mb = {self.limit_bytes / 2**20:g} (store fewer layers (edit.fatezero.store_layers) or "
                "steps (edit.fatezero.self_attn_steps, edit.fatezero.cross_attn_steps), edit fewer frames, or raise the limit)"
            )
        self.maps[key] = value
        self.nbytes += nbytes
        self.frames = max(self.frames, key[-1] + 1)

    # ---- lookup --------------------------------------------------------------------------------
    def get(self, kind: str, t: int, occurrence: int, layer: str, frames) -> torch.Tensor:
        """The maps of `frames` stacked: (q, heads, n_query, n_keys), in the store's dtype on the CPU."""
        self.ready()
        try:
            return torch.stack([self.maps[(kind, int(t), occurrence, layer, int(j))] for j in frames])
        except KeyError as err:
            raise VidinvError(
                f"FateZero attention store has no {kind}-attention map for {err.args[0]} "
                "(a store made for another plan, frame attention mode or frame count)"
            ) from None

    @property
    def bytes_per_frame_per_step(self) -> int:
        steps = len(self.plan.timesteps)
        return round(self.nbytes / (self.frames * steps)) if self.frames and steps else 0

    def stats(self) -> dict:
        return {
            "store_origin": self.origin,
            "store_bytes": self.nbytes,
            "store_mb": round(self.nbytes / 2**20, 3),
            "store_bytes_per_frame_per_step": self.bytes_per_frame_per_step,
            "store_steps": len(self.plan.timesteps),
            "store_maps": len(self.maps),
        }

    # ---- the record ------------------------------------------------------------------------------
    def finish(self, record) -> None:
        """Key the store to the record (its fingerprint); the maps copied during the inversion are complete."""
        self.ready()
        self.fingerprint = record.fingerprint
        if self.origin == "empty":
            self.origin = "inversion"

    def save(self, folder: str | Path) -> Path:
        """Write the maps and their JSON next to the inversion record in `folder` (atomically)."""
        folder = Path(folder)
        self.ready()
        tensors = {_key(*key): value.contiguous() for key, value in self.maps.items()}
        meta = {"format_version": str(FORMAT_VERSION), "fingerprint": self.fingerprint}
        with atomic_path(folder / STORE_FILE) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        info = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "plan": self.plan.to_json(),
            "bytes": self.nbytes,
            "frames": self.frames,
            "maps": len(self.maps),
            "bytes_per_frame_per_step": self.bytes_per_frame_per_step,
        }
        with atomic_path(folder / STORE_JSON) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return folder / STORE_FILE

    def load(self, folder: str | Path, record) -> bool:
        """Load the store in `folder` if it belongs to `record` and covers this store's plan.
        False (nothing changed) otherwise."""
        loaded = read_store(folder, record.fingerprint, limit_mb=self.limit_bytes / 2**20)
        if loaded is None or not loaded.plan.covers(self.plan):
            return False
        self.plan, self.maps, self.nbytes, self.frames = loaded.plan, loaded.maps, loaded.nbytes, loaded.frames
        self.origin = "loaded"
        self.finish(record)
        return True


def read_store(folder: str | Path, fingerprint: str, *, limit_mb: float = float("inf")) -> AttentionStore | None:
    """The store saved in `folder` for the record with `fingerprint`, or None (absent, other record,
    unreadable). A store over `limit_mb` is refused with a VidinvError."""
    folder = Path(folder)
    try:
        info = json.loads((folder / STORE_JSON).read_text(encoding="utf-8"))
        if info.get("format_version") != FORMAT_VERSION or info.get("fingerprint") != fingerprint:
            return None
        from safetensors import safe_open

        with safe_open(str(folder / STORE_FILE), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") != fingerprint:
                return None
        tensors = load_file(str(folder / STORE_FILE))
        store = AttentionStore(StorePlan.from_json(info["plan"]), limit_mb=limit_mb)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name, value in sorted(tensors.items()):
        store._add(_parse(name), value)
    store.fingerprint, store.origin = fingerprint, "loaded"
    return store
