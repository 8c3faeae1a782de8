"""Clip metrics: PSNR (per frame and mean), on tensors in a known value range; the clip comparison
of `vidinv edit` and `vidinv eval` (warp error, frame change, PSNR), on the clips' 8-bit pictures."""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import reduce


def psnr_per_frame(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR in dB of each frame of a and b (f ...), for values spanning `data_range` ([-1, 1] -> 2).

    Identical frames have an infinite PSNR (inf here; null in the JSON files, which hold no
    Infinity), as in scikit-image and torchmetrics, rather than an arbitrary large number."""
    diff = (a.double().cpu() - b.double().cpu()) ** 2
    mse = reduce(diff, "f ... -> f", "mean")
    return 10 * torch.log10(data_range**2 / mse)  # mse 0 -> inf


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean over frames of the per-frame PSNR in dB (inf when a frame is identical)."""
    return float(psnr_per_frame(a, b, data_range).mean())


def _to_gray_uint8(frames: torch.Tensor):
    """frames (f, 3, H, W) in [-1, 1] -> numpy uint8 (f, H, W) luma."""
    import numpy as np

    rgb = ((frames.float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    return luma.numpy().astype(np.uint8)


def source_flows(frames: torch.Tensor):
    """Backward optical flow (Farneback, OpenCV) for each consecutive pair of the SOURCE clip.

    Returns a list of (flow, valid) per pair i -> i+1: `flow` (H, W, 2) maps each pixel of frame
    i+1 to its position in frame i; `valid` (H, W) masks pixels whose forward-backward flow is
    consistent (not occluded) and that land inside frame i.
    """
    import cv2
    import numpy as np

    gray = _to_gray_uint8(frames)
    h, w = gray.shape[1:]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    params = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    pairs = []
    for prev, nxt in zip(gray[:-1], gray[1:]):
        backward = cv2.calcOpticalFlowFarneback(nxt, prev, None, **params)
        forward = cv2.calcOpticalFlowFarneback(prev, nxt, None, **params)
        where = grid + backward
        forward_at = cv2.remap(forward, where[..., 0], where[..., 1], cv2.INTER_LINEAR)
        round_trip = np.linalg.norm(backward + forward_at, axis=-1)
        inside = (where[..., 0] >= 0) & (where[..., 0] <= w - 1) & (where[..., 1] >= 0) & (where[..., 1] <= h - 1)
        tolerance = 0.01 * (np.linalg.norm(backward, axis=-1) ** 2 + np.linalg.norm(forward_at, axis=-1) ** 2) + 0.5
        pairs.append((where, inside & (round_trip < tolerance)))
    return pairs


def warp_errors(frames: torch.Tensor, flows) -> list[float]:
    """Per consecutive pair with valid pixels: the mean absolute difference (in [0, 1] units)
    between a frame and its predecessor warped along the source clip's flow."""
    import cv2
    import numpy as np

    rgb = ((frames.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    errors = []
    for i, (where, valid) in enumerate(flows):
        warped = cv2.remap(rgb[i], where[..., 0], where[..., 1], cv2.INTER_LINEAR)
        if valid.any():
            errors.append(float(np.abs(warped - rgb[i + 1])[valid].mean()))
    return errors


def warp_error(frames: torch.Tensor, flows) -> float:
    """Mean over pairs of `warp_errors`: low = temporally consistent."""
    return _mean(warp_errors(frames, flows))


def eight_bit(frames: torch.Tensor) -> np.ndarray:
    """frames (f, 3, H, W) in [-1, 1] -> the uint8 pictures (f, H, W, 3) a lossless file holds for
    them (`vidinv.io.video.frames_to_uint8`: rounded to the nearest of 256 levels, clamped)."""
    from vidinv.io.video import frames_to_uint8

    return frames_to_uint8(frames)


class ClipComparison:
    """`compare_clips` computed as the clips pass, chunk by chunk (only the last frame of each
    clip is kept between chunks): `update(source_chunk, edited_chunk)` for consecutive chunks,
    then `result()`. Equal to `compare_clips` on the whole clips, to the last bit, whatever the chunks.

    The clips are measured as their 8-bit pictures (`eight_bit`), the pictures a lossless file
    (runtime.codec=ffv1 or png) holds: `vidinv eval` of such files gives the run's metrics exactly.
    Frame change and PSNR are exact integer sums over those levels (no order-dependent float sums)."""

    def __init__(self):
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        self._warp = {"source": [], "edited": []}
        self._change = {"source": 0, "edited": 0}  # sum of |level change| over pairs, exact
        self._pairs = 0
        self._pixels = 0
        self._psnr: list[float] = []

    def update(self, source: torch.Tensor, edited: torch.Tensor) -> None:
        if source.shape != edited.shape:
            raise ValueError(f"clips differ in shape: {tuple(source.shape)} vs {tuple(edited.shape)}")
        source, edited = eight_bit(source), eight_bit(edited)
        self._psnr += _psnr_8bit(edited, source)
        if self._last is not None:  # the pair across the chunk border
            source = np.concatenate([self._last[0], source])
            edited = np.concatenate([self._last[1], edited])
        flows = source_flows(_float(source))
        for name, clip in (("source", source), ("edited", edited)):
            self._warp[name] += warp_errors(_float(clip), flows)
            if len(clip) > 1:
                self._change[name] += int(np.abs(np.diff(clip.astype(np.int16), axis=0)).sum(dtype=np.int64))
        self._pairs += len(source) - 1
        self._pixels = source[0].size
        self._last = (source[-1:].copy(), edited[-1:].copy())

    def result(self) -> dict:
        def change(name):  # mean |change| in [-1, 1] units, halved: levels / 255
            return self._change[name] / (255 * self._pairs * self._pixels) if self._pairs else 0.0

        return {
            "warp_error_source": _mean(self._warp["source"]),
            "warp_error_edited": _mean(self._warp["edited"]),
            "frame_change_source": change("source"),
            "frame_change_edited": change("edited"),
            "psnr_vs_source_db": _mean(self._psnr),
        }


def _float(pictures: np.ndarray) -> torch.Tensor:
    from vidinv.io.video import frames_from_uint8

    return frames_from_uint8(pictures)


def _psnr_8bit(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Per-frame PSNR in dB of uint8 pictures (f, H, W, 3), from the exact integer sum of squared
    level differences (inf for identical frames); `psnr_per_frame` of the same pictures as floats."""
    diff = a.astype(np.int32) - b.astype(np.int32)
    squares = (diff * diff).reshape(len(a), -1).sum(axis=1, dtype=np.int64)
    count = a[0].size
    return [float(10 * np.log10(255.0**2 * count / float(s))) if s else math.inf for s in squares]


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def compare_clips(source: torch.Tensor, edited: torch.Tensor) -> dict:
    """How an edited clip relates to its source (both (f, 3, H, W) in [-1, 1], same shape).

    warp_error_*: temporal consistency along the SOURCE's optical flow (lower = steadier);
    frame_change_*: raw frame-to-frame change; psnr_vs_source_db: how far the edit moved away.
    Both clips are measured as their 8-bit pictures (see `ClipComparison`).
    """
    comparison = ClipComparison()
    comparison.update(source, edited)
    return comparison.result()
