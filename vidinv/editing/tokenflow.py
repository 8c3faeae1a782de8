"""TokenFlow (Geyer, Bar-Tal, Bagon, Dekel, ICLR 2024): edit keyframes jointly, propagate along
the source video's correspondences.

Built on the PnP edit (`pnp.py`): the branches go through the record's sampler and method
wrapper (FreeInv's per-step transform, MBDI's group mean) exactly as there; only the UNet
evaluation differs, and the source rows run at every step (the nearest-neighbour fields are
computed from the source's tokens at each step). Each model call (one denoising step) runs two
passes over the rows [source uncond?, source cond, edit uncond?, edit cond]:

1. keyframe passes: the UNet over the step's keyframes only (one frame per group of
   `edit.tokenflow.keyframe_stride` frames, at an offset drawn per step and group from `edit.seed`), with
   extended attention among the keyframes of a window (every keyframe attends to every keyframe
   of its window of `edit.tokenflow.keyframe_window` consecutive keyframes; 0 = one window, the paper's
   setting) and PnP injection. A hook records, per self-attention layer, the keyframes' source
   tokens (the source conditional row's self-attention keys) and the edit rows' self-attention
   outputs. Their eps is not used. A window's pass runs just before the first propagation pass
   that reads it and its records are dropped after the last one, so the memory of both follows
   the window and the chunk, not the clip; with one window the result is the paper's.
2. propagation pass: the UNet over all frames (chunked by `runtime.unet_chunk`, the installed
   frame attention as configured) with PnP injection. In every self-attention layer the edit
   rows' output of frame i is replaced by the recorded keyframe outputs gathered along the
   nearest-neighbour field from frame i's source tokens to those of its nearest keyframe on each
   side, blended linearly by temporal distance (`correspondence.propagate`).

The source rows are never replaced: the source branch is computed exactly as in the PnP edit (the
reconstruction with the configured frame attention, or the stored inversion latents), so it
stays the trajectory the inversion made. A frame that is a keyframe is matched to itself; when
its source tokens in the propagation pass equal those of the keyframe pass (e.g. `full`
attention over the whole clip and every frame a keyframe), the match is the identity and the
edit equals the plain extended-attention PnP edit.

Frame-calls: rows x (K + F) per step (K = ceil(F / stride) keyframes), plus a nearest-
neighbour search of 2 x n x n x c per frame and layer (n tokens), memory-bounded by
`correspondence.nearest_neighbours`' chunking: linear in F.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from vidinv.attention.frames import FramePattern
from vidinv.attention.inflate import ensure_frame_attention
from vidinv.attention.processors import AttentionHook
from vidinv.attention.runner import clip_passes, discarded
from vidinv.editing.branches import EditDenoiser
from vidinv.editing.correspondence import DEFAULT_CHUNK, neighbour_keyframes, propagate
from vidinv.editing.pnp import PnPEdit


@dataclass
class TokenFlowSettings:
    """TokenFlow's keyframes (`edit.tokenflow`); its injection is PnP's (`edit.pnp`)."""

    keyframe_stride: int = 8  # one keyframe per group of this many frames (offset drawn per step)
    # keyframes edited jointly (extended attention among them) per keyframe pass; a step's keyframes
    # are cut into consecutive windows of this many, so memory follows the window, not the clip;
    # 0 = all of a step's keyframes together (the paper's setting)
    keyframe_window: int = 16

    def check(self, prefix: str) -> None:
        from vidinv.config import require

        require(self.keyframe_stride >= 1, f"{prefix}.keyframe_stride", self.keyframe_stride, "an integer >= 1")
        wanted = "an integer >= 0 (0 = all keyframes)"
        require(self.keyframe_window >= 0, f"{prefix}.keyframe_window", self.keyframe_window, wanted)


def keyframe_schedule(num_frames: int, stride: int, steps: int, seed: int) -> list[tuple[int, ...]]:
    """The keyframes of every step: frame g*stride + o_g of each group g of `stride` frames (the last
    group may be shorter), the offset o_g drawn uniformly per step and group from a generator
    seeded with `seed` (the same on every device). Sorted; stride 1 gives every frame."""
    if num_frames < 1 or stride < 1:
        raise ValueError("num_frames and stride must be >= 1")
    generator = torch.Generator("cpu").manual_seed(int(seed))
    starts = range(0, num_frames, stride)
    schedule = []
    for _ in range(steps):
        offsets = [int(torch.randint(min(stride, num_frames - s), (1,), generator=generator)) for s in starts]
        schedule.append(tuple(s + o for s, o in zip(starts, offsets)))
    return schedule


@contextmanager
def frame_pattern(handle, pattern: FramePattern):
    """Run the UNet with another frame pattern for the duration of the block (restored exactly)."""
    saved = handle.pattern, handle.context.pattern
    handle.pattern = handle.context.pattern = pattern
    try:
        yield handle
    finally:
        handle.pattern, handle.context.pattern = saved


def window_size(keyframes: tuple[int, ...], window: int) -> int:
    """Keyframes per window (`edit.tokenflow.keyframe_window`; 0 = all of them in one)."""
    return len(keyframes) if window <= 0 else window


def keyframe_windows(keyframes: tuple[int, ...], window: int) -> list[tuple[int, ...]]:
    """A step's sorted keyframes cut into consecutive windows of `window` keyframes (0 = one window)."""
    size = window_size(keyframes, window)
    return [tuple(keyframes[j : j + size]) for j in range(0, len(keyframes), size)]


def windows_read(frames: list[int], keyframes: tuple[int, ...], window: int) -> list[int]:
    """The windows (of `keyframe_windows(keyframes, window)`) holding the keyframes `frames` are
    propagated from (`neighbour_keyframes`), sorted: keyframe position p is in window p // size."""
    size = window_size(keyframes, window)
    return sorted({p // size for frame in frames for p, _ in neighbour_keyframes(frame, keyframes)})


class TokenFlowHook(AttentionHook):
    """Records the keyframes' source tokens and edit outputs (keyframe passes, one per window of
    keyframes) and replaces the edit rows' self-attention outputs by the ones propagated from the
    windows a propagation pass reads."""

    def __init__(self, source_row: int, edit_rows: list[int], *, chunk: int = DEFAULT_CHUNK):
        self.source_row, self.edit_rows, self.chunk = source_row, list(edit_rows), chunk
        self._host_s = 0.0  # propagation time measured on the host (CPU)
        self._events: list = []  # (start, end) CUDA events around each propagation on a GPU
        self.clear()

    @property
    def nn_s(self) -> float:
        """Seconds spent propagating: host time on the CPU; on CUDA the device time between events
        recorded around each propagation (read once the device is done: no sync per layer)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._host_s += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events = []
        return self._host_s

    def clear(self) -> None:
        self.phase: str | None = None
        self.window: int | None = None  # the window the keyframe pass in flight records
        self.members: dict[int, tuple[int, ...]] = {}  # window -> its keyframes
        self.tokens: dict[int, dict[str, torch.Tensor]] = {}  # window -> layer -> source tokens (K_w, n, c)
        self.values: dict[int, dict[str, torch.Tensor]] = {}  # window -> layer -> edit outputs (b_edit, K_w, n, c)
        self.reading: list[int] = []  # the windows the propagation pass in flight reads
        self.keyframes: tuple[int, ...] = ()  # their keyframes, in order
        self.pending: dict[str, torch.Tensor] = {}  # layer -> this pass's source tokens (f, n, c)

    def keyframe_pass(self, window: int, keyframes: tuple[int, ...]) -> None:
        self.phase, self.window = "keyframes", window
        self.members[window], self.tokens[window], self.values[window] = tuple(keyframes), {}, {}

    def propagation_pass(self, windows: list[int]) -> None:
        self.phase, self.reading = "propagate", list(windows)
        self.keyframes = tuple(k for w in self.reading for k in self.members[w])

    def drop(self, window: int) -> None:
        """Forget a window no later pass reads."""
        del self.members[window], self.tokens[window], self.values[window]

    def _read(self, store: dict, layer: str, dim: int) -> torch.Tensor:
        parts = [store[w][layer] for w in self.reading]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)

    def qkv(self, layer, q, k, v, frames):
        source = k[self.source_row]
        if self.phase == "keyframes":
            self.tokens[self.window][layer] = source.clone()
        elif self.phase == "propagate":
            self.pending[layer] = source
        return q, k, v

    def output(self, layer, out, frames):
        targets = self.edit_rows
        if self.phase == "keyframes":
            self.values[self.window][layer] = out[targets].clone()
        elif self.phase == "propagate":
            stream = torch.cuda.current_stream(out.device) if out.device.type == "cuda" else None
            if stream is not None:
                events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                events[0].record(stream)
            started = time.perf_counter()
            moved = propagate(
                frames,
                self.pending.pop(layer),
                self.keyframes,
                self._read(self.tokens, layer, 0),
                self._read(self.values, layer, 1),
                chunk=self.chunk,
            )
            if stream is not None:
                events[1].record(stream)
                self._events.append(events)
            else:
                self._host_s += time.perf_counter() - started
            out = out.clone()
            out[targets] = moved.to(out.dtype)
        return out


class TokenFlowDenoiser(EditDenoiser):
    """EditDenoiser whose UNet evaluation is TokenFlow's keyframe passes + propagation pass. The
    keyframe pass of a window runs just before the first propagation pass that reads it, and its
    records are dropped after the last one, so at most the windows around one pass are held."""

    def __init__(
        self,
        *args,
        handle,
        keyframe_stride: int,
        keyframe_window: int,
        seed: int,
        num_frames: int,
        nn_chunk: int = DEFAULT_CHUNK,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.handle = handle
        self.stride, self.window = keyframe_stride, keyframe_window
        self.schedule = keyframe_schedule(num_frames, keyframe_stride, len(self.table), seed)
        # NN fields from the source's conditional row; replaced: every edit row
        n_source, rows = len(self.source_rows), len(self.source_rows) + len(self.edit_rows)
        self.tokenflow = TokenFlowHook(n_source - 1, list(range(n_source, rows)), chunk=nn_chunk)
        self.keyframe_calls = self.propagation_calls = 0
        self.windows_held = 0  # the most windows held at once

    def keyframe_pass(self, branches, rows, t, text, control, window: int, keyframes: tuple[int, ...]) -> None:
        """The UNet over one window's keyframes, extended attention among them; records only."""
        self.tokenflow.keyframe_pass(window, keyframes)
        with frame_pattern(self.handle, FramePattern("full", group=len(keyframes))):
            self.call_unet(  # records only: its predictions are not kept
                branches[:, list(keyframes)],
                t,
                text,
                rows=rows,
                control=None if control is None else control.frames(keyframes),
                chunk=None,
                reduce=discarded,
            )
        self.keyframe_calls += len(rows) * len(keyframes)

    def run(self, branches: torch.Tensor, rows: list[int], t, step: int, text, reduce=None) -> torch.Tensor:
        keyframes = self.schedule[step]
        frames = branches.shape[1]
        control = self.row_control(len(rows) - len(self.edit_rows), len(self.edit_rows))
        windows = keyframe_windows(keyframes, self.window)
        reads = [windows_read(part, keyframes, self.window) for part in clip_passes(self.unet, frames, self.chunk)]
        last_read = {w: index for index, read in enumerate(reads) for w in read}
        hook = self.tokenflow

        def before_pass(index: int) -> None:
            for w in [w for w in hook.members if last_read[w] < index]:
                hook.drop(w)
            for w in reads[index]:
                if w not in hook.members:
                    self.keyframe_pass(branches, rows, t, text, control, w, windows[w])
            self.windows_held = max(self.windows_held, len(hook.members))
            hook.propagation_pass(reads[index])

        self.handle.hooks.append(hook)
        try:
            pred = self.call_unet(
                branches, t, text, rows=rows, control=control, chunk=self.chunk, reduce=reduce, before_pass=before_pass
            )
        finally:
            self.handle.hooks.remove(hook)
            hook.clear()
        self.propagation_calls += len(rows) * frames
        self.frame_calls += len(rows) * (len(keyframes) + frames)
        return pred

    def extra_stats(self) -> dict:
        return {
            "keyframe_stride": self.stride,
            "keyframe_window": self.window,
            "keyframe_windows_held": self.windows_held,
            "keyframes_per_step": len(self.schedule[0]) if self.schedule else 0,
            "keyframe_pass_calls": self.keyframe_calls,
            "propagation_pass_calls": self.propagation_calls,
            "nn_s": round(self.tokenflow.nn_s, 4),
            "keyframes": [list(k) for k in self.schedule],
        }


class TokenFlowEdit(PnPEdit):
    """TokenFlow: PnP on keyframes with extended attention, propagated to every frame along the
    source's correspondences (module docstring)."""

    name = "tokenflow"
    settings = TokenFlowSettings
    denoiser = TokenFlowDenoiser
    flow_models = False  # its propagation works on the UNet's self-attention outputs

    @classmethod
    def predicted_frame_calls(cls, config, frames, latent_hw, **context) -> int:
        """Every edit step: rows x (K keyframes + F frames), K = ceil(F / keyframe_stride); the source
        rows run every step (the correspondences)."""
        import math

        from vidinv.editing.pnp import injected_source_rows, source_kind
        from vidinv.inversion.costs import Costs

        costs = Costs(config)
        keyframes = math.ceil(frames / config.edit.tokenflow.keyframe_stride)
        per_step = (injected_source_rows(costs) + costs.edit_rows) * (keyframes + frames)
        from_record = source_kind(config, costs.sampler) == "record"
        mask = costs.mask_calls(frames, latent_hw, from_record=from_record)  # a masked edit's source branch
        return costs.edit_steps * per_step * costs.group(latent_hw) + mask

    @classmethod
    def predicted_activation_bytes(cls, config, unet, text, frames, latent_hw, dtype) -> int:
        """Peak bytes of TokenFlow's widest moment on the device (fake mode): a window's keyframe pass
        (`keyframe_window` keyframes in one UNet call, extended attention among them) while the
        records of the other windows a propagation pass reads are held; the propagation pass itself
        is the run's chunked UNet call, with at most as many windows held."""
        import math

        from vidinv.attention import run_unet
        from vidinv.attention.handle import frame_attention_of
        from vidinv.inversion.costs import Costs
        from vidinv.planning.memory import peak_bytes

        tf, chunk = config.edit.tokenflow, config.runtime.unet_chunk or frames
        total = math.ceil(frames / tf.keyframe_stride)
        window = min(total, tf.keyframe_window or total)
        held = min(math.ceil(total / window), 2 + math.ceil(chunk / (tf.keyframe_stride * window)))
        costs = Costs(config)
        n_rows = costs.source_rows + costs.edit_rows
        hook = TokenFlowHook(0, list(range(1, n_rows)))
        hook.keyframe_pass(0, tuple(range(window)))
        handle = frame_attention_of(unet)
        batch = torch.empty(n_rows, window, unet.config.in_channels, *latent_hw, dtype=dtype)
        handle.hooks.append(hook)
        try:
            with frame_pattern(handle, FramePattern("full", group=window)):
                peak = peak_bytes(lambda: run_unet(unet, batch, torch.tensor(999), text, chunk=None))
        finally:
            handle.hooks.remove(hook)
        records = sum(t.nbytes for store in (hook.tokens[0], hook.values[0]) for t in store.values())
        return peak + (held - 1) * records

    def source_until(self, injection, steps: int) -> int:
        return steps  # the correspondences need the source's tokens at every step

    def denoiser_options(self, record) -> dict:
        return {
            "handle": ensure_frame_attention(self.models.unet, self.config.model.attention),
            "keyframe_stride": self.config.edit.tokenflow.keyframe_stride,
            "keyframe_window": self.config.edit.tokenflow.keyframe_window,
            "seed": self.config.edit.seed,
            "num_frames": record.latents.shape[1],
        }


def tokenflow_edit(models, record, config, *, progress: bool = False):
    """The TokenFlow edit of `record` (function form of `TokenFlowEdit`)."""
    return TokenFlowEdit(models, config).edit(record, progress=progress)
