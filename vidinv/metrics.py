"""Clip metrics: PSNR (per frame and mean), on tensors in a known value range; the clip comparison
of `vidinv edit` and `vidinv eval` on the clips' 8-bit pictures: warp error, frame change, flicker,
PSNR and SSIM against the source (also of the region outside an edit mask), and with a CLIP model
(`vidinv.clip_metrics`) CLIP-T and CLIP-F. Definitions and references: docs/operations.md (`vidinv eval`)."""

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


def warp_errors_per_pair(frames: torch.Tensor, flows) -> list[float | None]:
    """Per consecutive pair (i, i + 1): the mean absolute difference (in [0, 1] units) between
    frame i + 1 and frame i warped along the source clip's flow, over the pair's valid pixels;
    None for a pair without any."""
    import cv2
    import numpy as np

    rgb = ((frames.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    errors = []
    for i, (where, valid) in enumerate(flows):
        warped = cv2.remap(rgb[i], where[..., 0], where[..., 1], cv2.INTER_LINEAR)
        errors.append(float(np.abs(warped - rgb[i + 1])[valid].mean()) if valid.any() else None)
    return errors


def warp_errors(frames: torch.Tensor, flows) -> list[float]:
    """`warp_errors_per_pair` of the pairs with valid pixels."""
    return [e for e in warp_errors_per_pair(frames, flows) if e is not None]


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
    Frame change and PSNR are exact integer sums over those levels (no order-dependent float sums);
    SSIM, flicker and the CLIP scores are per frame or per pair, each computed from its own frames
    alone and averaged once at the end, so no chunk border moves a bit.

    mask: None, or bool (n, H, W) with n = 1 (every frame) or the clip's frame count: True where the
    edit was meant to change the picture; adds PSNR and SSIM of the rest (`psnr_unedited_db`,
    `ssim_unedited`) and its share of the pixels (`unedited_fraction`). clip: None, or a
    `vidinv.clip_metrics.ClipScores` fed the edited pictures (adds `clip_t`, `clip_f`)."""

    def __init__(self, *, mask: np.ndarray | None = None, clip=None):
        if mask is not None and (mask.ndim != 3 or mask.dtype != np.bool_):
            raise ValueError(f"the mask must be bool (n, H, W), got {mask.dtype} {tuple(mask.shape)}")
        self._mask = mask
        self._clip = clip
        self._frames = 0  # frames seen so far: the index of the next chunk's first frame
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        self._warp = {"source": [], "edited": []}  # per pair, None where no pixel is valid
        self._change = {"source": 0, "edited": 0}  # sum of |level change| over pairs, exact
        self._flicker = {"source": [], "edited": []}  # per pair
        self._pairs = 0
        self._pixels = 0
        self._psnr: list[float] = []
        self._ssim: list[float] = []
        self._unedited = {"psnr": [], "ssim": [], "fraction": []}

    def update(self, source: torch.Tensor, edited: torch.Tensor) -> None:
        if source.shape != edited.shape:
            raise ValueError(f"clips differ in shape: {tuple(source.shape)} vs {tuple(edited.shape)}")
        source, edited = eight_bit(source), eight_bit(edited)
        self._psnr += _psnr_8bit(edited, source)
        self._ssim += [ssim_8bit(e, s) for e, s in zip(edited, source)]
        if self._mask is not None:
            self._update_unedited(source, edited)
        if self._clip is not None:
            self._clip.update(edited)
        self._frames += len(source)
        if self._last is not None:  # the pair across the chunk border
            source = np.concatenate([self._last[0], source])
            edited = np.concatenate([self._last[1], edited])
        floats = {"source": _float(source), "edited": _float(edited)}  # each clip converted once
        flows = source_flows(floats["source"])
        for name, clip in (("source", source), ("edited", edited)):
            self._warp[name] += warp_errors_per_pair(floats[name], flows)
            if len(clip) > 1:
                self._change[name] += int(np.abs(np.diff(clip.astype(np.int16), axis=0)).sum(dtype=np.int64))
            self._flicker[name] += flicker_per_pair(clip)
        self._pairs += len(source) - 1
        self._pixels = source[0].size
        self._last = (source[-1:].copy(), edited[-1:].copy())

    def _update_unedited(self, source: np.ndarray, edited: np.ndarray) -> None:
        mask = self._mask
        if mask.shape[1:] != source.shape[1:3]:
            raise ValueError(
                f"the mask is {mask.shape[2]}x{mask.shape[1]}, the frames {source.shape[2]}x{source.shape[1]}"
            )
        if len(mask) != 1 and self._frames + len(source) > len(mask):
            raise ValueError(f"the mask has {len(mask)} frames, the clips more ({self._frames + len(source)} so far)")
        for i, (s, e) in enumerate(zip(source, edited)):
            edited_region = mask[0] if len(mask) == 1 else mask[self._frames + i]
            keep = ~edited_region
            self._unedited["fraction"].append(float(keep.mean()))
            if keep.any():
                self._unedited["psnr"] += _psnr_8bit(e[None], s[None], keep[None])
            value = ssim_8bit(e, s, keep)
            if not math.isnan(value):
                self._unedited["ssim"].append(value)

    def per_frame(self) -> dict:
        """The warp errors of each consecutive pair (entry i: frame i + 1 against frame i warped
        along the source's flow; None where no pixel is valid), of the source and the edited clip:
        the values `result()` averages."""
        return {f"warp_error_{name}": list(self._warp[name]) for name in ("source", "edited")}

    def result(self) -> dict:
        def change(name):  # mean |change| in [-1, 1] units, halved: levels / 255
            return self._change[name] / (255 * self._pairs * self._pixels) if self._pairs else 0.0

        result = {
            "warp_error_source": _mean(_valid(self._warp["source"])),
            "warp_error_edited": _mean(_valid(self._warp["edited"])),
            "frame_change_source": change("source"),
            "frame_change_edited": change("edited"),
            "flicker_source": _mean(self._flicker["source"]),
            "flicker_edited": _mean(self._flicker["edited"]),
            "psnr_vs_source_db": _mean(self._psnr),
            "ssim_vs_source": _mean(self._ssim, empty=math.nan),
        }
        if self._mask is not None:
            if len(self._mask) not in (1, self._frames):
                raise ValueError(f"the mask has {len(self._mask)} frames, the clips {self._frames}")
            result["unedited_fraction"] = _mean(self._unedited["fraction"], empty=math.nan)
            result["psnr_unedited_db"] = _mean(self._unedited["psnr"], empty=math.nan)
            result["ssim_unedited"] = _mean(self._unedited["ssim"], empty=math.nan)
        if self._clip is not None:
            result.update(self._clip.result())
        return result


# SSIM as defined by Wang, Bovik, Sheikh & Simoncelli 2004 ("Image quality assessment: from error
# visibility to structural similarity"): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03,
# L = 255; the SSIM map on the window positions inside the picture (MATLAB's `filter2(..., 'valid')`
# of the paper's reference code, scikit-image's crop), per RGB channel, averaged.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # an 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03
# flicker: BT.601 luma of the 8-bit levels, low-passed by a Gaussian of sigma 2 px (13 taps, radius
# 6 = 3 sigma; mirrored border, scipy.ndimage's "reflect"), in [0, 1] units (levels / 255)
FLICKER_SIGMA = 2.0
FLICKER_RADIUS = 6
LUMA = (0.299, 0.587, 0.114)


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """The normalised 1-D Gaussian of `sigma` on -radius..radius (float64)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def _blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable filter of a float64 (H, W) or (H, W, C) image with a mirrored border (edge pixels repeated)."""
    import cv2

    return cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SSIM map (H - 10, W - 10) of uint8 pictures (H, W, 3), averaged over the channels: the
    value of each 11x11 window inside the picture, at the window's centre."""
    if min(a.shape[:2]) < 2 * SSIM_RADIUS + 1:
        return np.full((max(a.shape[0] - 2 * SSIM_RADIUS, 0), max(a.shape[1] - 2 * SSIM_RADIUS, 0)), math.nan)
    kernel = gaussian_kernel(SSIM_SIGMA, SSIM_RADIUS)
    x, y = a.astype(np.float64), b.astype(np.float64)
    r = SSIM_RADIUS

    def mean(image):  # the window means, at positions whose window lies inside the picture
        return _blur(image, kernel)[r:-r, r:-r]

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx * mx, mean(y * y) - my * my, mean(x * y) - mx * my
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim.mean(axis=-1)


def ssim_8bit(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> float:
    """SSIM of two uint8 pictures (H, W, 3): the mean of `ssim_map` (nan for pictures under 11 px).
    keep: bool (H, W), the region to compare: the mean over the windows that lie wholly in it (nan
    when none does), so that a change outside `keep` moves no value."""
    import cv2

    values = ssim_map(a, b)
    if keep is not None and values.size:
        r, side = SSIM_RADIUS, 2 * SSIM_RADIUS + 1
        inside = cv2.erode(keep.astype(np.uint8), np.ones((side, side), np.uint8))[r:-r, r:-r]
        values = values[inside.astype(bool)]
    return float(values.mean()) if values.size else math.nan


def low_pass_luma(pictures: np.ndarray) -> np.ndarray:
    """uint8 pictures (f, H, W, 3) -> their luma (BT.601 weights, float64 levels / 255) blurred by a
    Gaussian of sigma FLICKER_SIGMA (f, H, W)."""
    kernel = gaussian_kernel(FLICKER_SIGMA, FLICKER_RADIUS)
    rgb = pictures.astype(np.float64) / 255
    luma = LUMA[0] * rgb[..., 0] + LUMA[1] * rgb[..., 1] + LUMA[2] * rgb[..., 2]
    return np.stack([_blur(np.ascontiguousarray(frame), kernel) for frame in luma]) if len(luma) else luma


def flicker_per_pair(pictures: np.ndarray) -> list[float]:
    """Per consecutive pair of uint8 pictures (f, H, W, 3): the mean absolute difference of their
    low-pass luma (`low_pass_luma`), in [0, 1] units."""
    smooth = low_pass_luma(pictures)
    return [float(np.abs(b - a).mean()) for a, b in zip(smooth[:-1], smooth[1:])]


def _float(pictures: np.ndarray) -> torch.Tensor:
    from vidinv.io.video import frames_from_uint8

    return frames_from_uint8(pictures)


def _psnr_8bit(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> list[float]:
    """Per-frame PSNR in dB of uint8 pictures (f, H, W, 3), from the exact integer sum of squared
    level differences (inf for identical frames); `psnr_per_frame` of the same pictures as floats.
    keep: bool (f, H, W), the pixels compared (all three channels of each; at least one per frame)."""
    diff = a.astype(np.int32) - b.astype(np.int32)
    squares = diff * diff
    if keep is None:
        sums = squares.reshape(len(a), -1).sum(axis=1, dtype=np.int64)
        counts = [a[0].size] * len(a)
    else:
        sums = [int(frame[k].sum(dtype=np.int64)) for frame, k in zip(squares, keep)]
        counts = [int(k.sum()) * a.shape[-1] for k in keep]
    return [float(10 * np.log10(255.0**2 * n / float(s))) if s else math.inf for s, n in zip(sums, counts)]


def _valid(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _mean(values: list[float], empty: float = 0.0) -> float:
    return float(sum(values) / len(values)) if values else empty


def compare_clips(source: torch.Tensor, edited: torch.Tensor, *, mask: np.ndarray | None = None, clip=None) -> dict:
    """How an edited clip relates to its source (both (f, 3, H, W) in [-1, 1], same shape).

    warp_error_*: temporal consistency along the SOURCE's optical flow (lower = steadier);
    frame_change_*: raw frame-to-frame change; flicker_*: frame-to-frame change of the low-pass luma;
    psnr_vs_source_db, ssim_vs_source: how far the edit moved away; with `mask` (True = edited) the
    same of the unedited region; with `clip` (`vidinv.clip_metrics.ClipScores`) CLIP-T and CLIP-F.
    Both clips are measured as their 8-bit pictures (see `ClipComparison`).
    """
    comparison = ClipComparison(mask=mask, clip=clip)
    comparison.update(source, edited)
    return comparison.result()
