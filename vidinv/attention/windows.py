"""Overlapping temporal windows over a video transformer's latent frames (Wan 2.1: `runtime.window`,
`runtime.window_overlap`; docs/models.md, "Long clips").

    windows = Windows(size=21, overlap=6)          # resolve_windows(family, runtime, factor) from a config
    windows.slices(81)                             # [0:21, 15:36, 30:51, 45:66, 60:81]
    windows.weights(81)                            # one ramp (n,) per window: 1 on every latent frame summed
    v = windows.run(call, 81)                      # call(window) -> (b n ...), blended into (b 81 ...)

A clip longer than one window is cut into windows of `size` latent frames, consecutive ones sharing
`overlap` frames (stride = size - overlap), and the velocity v(z, t) is the transformer run on each
window, blended where windows overlap with linear ramps (MultiDiffusion, Bar-Tal et al. 2023): window
k weighs its frame j by min(j + 1, n - j, overlap + 1) (its first / last window: no ramp at the clip's
ends), normalised so the weights sum to one on every latent frame. `run_flow` is the one place a flow
model is called, so the inversion (flow, FreeInv: the step's one transform in every window, MBDI, the
second-order rules), the reconstruction and FlowEdit all run window by window at each step with the
same weights. A clip of at most one window runs as one call, exactly as without windows (bit for bit).

Frame-calls count the latent frames of every window call, overlaps twice (`frame_calls`). A clip must be
whole windows: `size + m * stride` latent frames; any other count is a one-line error naming the
nearest valid frame counts and overlaps (`check`), raised by `vidinv plan` before anything loads.

Interrupts and resume: inside `logging_windows(log)` (the inversion, with a checkpoint) every window's
output of the step in flight is kept in a `WindowLog`, and the window boundary is a checkpoint
boundary: `log.on_window` saves the last finished step's state with the step's windows so far (when a
checkpoint is due, and at once on a first Ctrl-C, then stops), and a resumed run replays those windows
instead of running them, so it gives the uninterrupted record bit for bit. `window_progress(True)`
shows a progress bar over the windows of each call.
"""

from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vidinv.errors import VidinvError

log = logging.getLogger("vidinv")
WINDOW_KEY = "window."  # a checkpoint's logged window outputs: window.0, window.1, ...
_log: ContextVar[WindowLog | None] = ContextVar("vidinv_window_log", default=None)
_progress: ContextVar[bool] = ContextVar("vidinv_window_progress", default=False)
_current: ContextVar[tuple[slice, torch.Tensor] | None] = ContextVar("vidinv_current_window", default=None)


@dataclass(frozen=True)
class Windows:
    """Windows of `size` latent frames overlapping by `overlap` (module docstring); `factor`: frames
    per latent frame after the first (Wan's causal VAE: 4), for messages in frames."""

    size: int
    overlap: int = 0
    factor: int = 4

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    def count(self, frames: int) -> int:
        """Windows over `frames` latent frames (1 for a clip of at most one window)."""
        return 1 if frames <= self.size else 1 + (frames - self.size) // self.stride

    def fits(self, frames: int) -> bool:
        return frames <= self.size or (frames - self.size) % self.stride == 0

    def check(self, frames: int) -> None:
        """A one-line error unless `frames` latent frames are whole windows (module docstring)."""
        if self.fits(frames):
            return
        below = self.size + (frames - self.size) // self.stride * self.stride
        nearest = " or ".join(str(self.pixels(n)) for n in (below, below + self.stride))
        overlaps = [o for o in range(self.size) if (frames - self.size) % (self.size - o) == 0]
        near = sorted(overlaps, key=lambda o: (abs(o - self.overlap), o))[:2]
        raise VidinvError(
            f"runtime.window: {self.pixels(frames)} frames ({frames} latent frames) are not whole windows of"
            f" {self.size} latent frames overlapping by {self.overlap} (stride {self.stride}): use"
            f" video.num_frames {nearest}, or runtime.window_overlap {' or '.join(map(str, sorted(near)))}"
        )

    def pixels(self, latent_frames: int) -> int:
        """Frames of a clip of `latent_frames` latent frames: 1 + factor (latent_frames - 1)."""
        return 1 + self.factor * (latent_frames - 1)

    def slices(self, frames: int) -> list[slice]:
        """The windows' latent-frame ranges over a clip of `frames` latent frames (checked)."""
        self.check(frames)
        if frames <= self.size:
            return [slice(0, frames)]
        return [slice(k * self.stride, k * self.stride + self.size) for k in range(self.count(frames))]

    def weights(self, frames: int) -> list[torch.Tensor]:
        """Each window's ramp (n,) float32: min(j + 1, n - j, overlap + 1) at its frame j (no ramp at
        the clip's ends), divided by their sum on each latent frame, so the weights sum to one there."""
        spans = self.slices(frames)
        ramps = []
        for k, span in enumerate(spans):
            n = span.stop - span.start
            j = torch.arange(n, dtype=torch.float64)
            up = torch.full_like(j, self.overlap + 1.0) if k == 0 else j + 1
            down = torch.full_like(j, self.overlap + 1.0) if k == len(spans) - 1 else n - j
            ramps.append(torch.minimum(torch.minimum(up, down), torch.tensor(self.overlap + 1.0)))
        total = torch.zeros(frames, dtype=torch.float64)
        for span, ramp in zip(spans, ramps):
            total[span] += ramp
        return [(ramp / total[span]).float() for span, ramp in zip(spans, ramps)]

    def frame_calls(self, frames: int) -> int:
        """Latent frames through the transformer in one windowed call: every window's, overlaps twice."""
        return sum(span.stop - span.start for span in self.slices(frames))

    def describe(self, frames: int) -> dict:
        return {"windows": self.count(frames), "window": self.size, "window_overlap": self.overlap}

    def run(self, call, frames: int) -> torch.Tensor:
        """The windows' outputs blended over the clip: `call(span)` gives window `span`'s output
        (b n ...) for its n latent frames; one window: `call(slice(None))`, the unwindowed call itself."""
        if frames <= self.size:
            return call(slice(None))
        spans, weights = self.slices(frames), self.weights(frames)
        logged, out = _log.get(), None
        bar = tqdm(total=len(spans), desc="windows", disable=not _progress.get(), leave=False)
        for k, (span, weight) in enumerate(zip(spans, weights)):
            part = None if logged is None else logged.take()
            if part is None:
                token = _current.set((span, weight))
                try:
                    part = call(span)
                finally:
                    _current.reset(token)
                if logged is not None:
                    logged.add(part, k, len(spans))
            if out is None:
                dtype = torch.promote_types(part.dtype, torch.float32)
                out = torch.zeros(part.shape[0], frames, *part.shape[2:], dtype=dtype, device=part.device)
            out[:, span] += part * weight.to(device=part.device, dtype=out.dtype).view(1, -1, *[1] * (part.dim() - 2))
            bar.update()
        bar.close()
        return out


def resolve_windows(family, runtime, factor: int = 4, *, note: bool = True) -> Windows | None:
    """The windows of `runtime.window` / `window_overlap` (null: `default_overlap`) on a model of
    `family` (its record): None for a frame model (a note when runtime.window is set: they are chunked per frame by
    runtime.unet_chunk) and with `runtime.window: 0`; a one-line error for an overlap not below the window."""
    native = getattr(family, "native_latent_frames", None)
    if native is None:
        if runtime.window and note:
            log.warning(
                "note: runtime.window=%s is not applied: %s is a frame model (runtime.unet_chunk chunks it per frame)",
                runtime.window,
                getattr(family, "display", "this model"),
            )
        return None
    size = native if runtime.window is None else runtime.window
    if size == 0:
        return None
    overlap = default_overlap(size) if runtime.window_overlap is None else runtime.window_overlap
    if not 0 <= overlap < size:
        raise VidinvError(
            f"runtime.window_overlap: {overlap} must be in 0..{size - 1}, below the window of {size} latent"
            f" frames (runtime.window{'' if runtime.window is not None else ': the model native length'})"
        )
    return Windows(size, overlap, factor)


def default_overlap(size: int) -> int:
    """`runtime.window_overlap: null`: a quarter of the window, rounded, at least 1 (0 for a window of 1)."""
    return min(size - 1, max(1, round(size / 4)))


def windows_of(models) -> Windows | None:
    """The windows the model's calls run in (`models.windows`, set from the config by
    `vidinv.editor.prepare_models`), or None."""
    return getattr(models, "windows", None)


def latent_frame_calls(models, frames: int) -> int:
    """Frame-calls of one call of the model on `frames` (latent) frames: the windows' frames, overlaps twice."""
    windows = windows_of(models)
    return frames if windows is None else windows.frame_calls(frames)


def current_window() -> tuple[slice, torch.Tensor] | None:
    """(latent-frame range, ramp weights) of the window whose transformer call is in flight; None
    outside a windowed call (a clip of one window included)."""
    return _current.get()


@contextlib.contextmanager
def window_progress(enabled: bool):
    """Inside the block, a progress bar over the windows of each windowed call when `enabled`."""
    token = _progress.set(bool(enabled))
    try:
        yield
    finally:
        _progress.reset(token)


class WindowLog:
    """The window outputs of the step in flight (module docstring): `replay` from a checkpoint is
    handed back window by window before any window runs; `on_window(log, k, count)` is called after
    each window that ran (a window boundary: it may save a checkpoint with `state()` or stop); the
    outputs are kept only with `keep` (a checkpoint to write them to)."""

    def __init__(self, replay: list[torch.Tensor] | None = None, on_window=None, *, keep: bool = True):
        self.replay, self.parts, self.on_window, self.keep = list(replay or []), [], on_window, keep
        self.replayed_calls = 0  # frame-calls replayed from the checkpoint (not run again)

    def take(self) -> torch.Tensor | None:
        if not self.replay:
            return None
        part = self.replay.pop(0)
        self.parts.append(part)
        self.replayed_calls += part.shape[0] * part.shape[1]
        return part

    def add(self, part: torch.Tensor, k: int, count: int) -> None:
        if self.keep:  # only a checkpoint needs them
            self.parts.append(part)
        if self.on_window is not None:
            self.on_window(self, k, count)

    def step_done(self) -> None:
        """A step finished: its windows are in its latents now."""
        self.parts.clear()

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{WINDOW_KEY}{k}": part for k, part in enumerate(self.parts)}

    @staticmethod
    def split(state: dict | None) -> tuple[dict | None, list[torch.Tensor]]:
        """(the state without its window outputs, the window outputs in order) of a checkpoint's state."""
        if not state:
            return state, []
        keys = sorted((k for k in state if k.startswith(WINDOW_KEY)), key=lambda k: int(k[len(WINDOW_KEY) :]))
        return {k: v for k, v in state.items() if not k.startswith(WINDOW_KEY)}, [state[k] for k in keys]


@contextlib.contextmanager
def logging_windows(window_log: WindowLog | None):
    """Windowed calls inside the block keep their outputs in `window_log` (nothing with None)."""
    token = _log.set(window_log)
    try:
        yield
    finally:
        _log.reset(token)


def set_windows(models, runtime, *, note: bool = True) -> Windows | None:
    """Apply `runtime.window` / `window_overlap` to the model's calls (`models.windows`, in place):
    a video model's windows, None on frame models (a note when runtime.window is set)."""
    from vidinv.models.causal_vae import temporal_factor

    family = getattr(models, "family", None)
    factor = temporal_factor(dict(models.vae.config)) if getattr(models, "vae", None) is not None else 4
    windows = resolve_windows(family, runtime, factor, note=note)
    if windows is not None or hasattr(models, "windows"):
        models.windows = windows
    return windows
