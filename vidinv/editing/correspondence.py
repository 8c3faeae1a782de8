"""Nearest-neighbour correspondences between token sets, memory-bounded, and the gather along them.

TokenFlow (Geyer et al., ICLR 2024) matches every token of a frame to its most similar token of
a keyframe (cosine similarity of the SOURCE video's self-attention tokens) and moves the edited
keyframe's tokens along those matches. A full similarity matrix would be f x n x m entries per
layer; here it is built `chunk` query tokens at a time (whole frames batched when a frame has
fewer tokens than `chunk`), so the similarity block in memory is at most chunk x m entries,
whatever the number of frames. Works on any device; the matmuls run in float32.
"""

from __future__ import annotations

import bisect

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 1024


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """For queries (f, n, c) and keys (f, m, c) (frame i's queries searched in keys[i]), the index
    (f, n) of the cosine-nearest key of every query token (ties: the lowest index).

    The similarity is computed for blocks of at most `chunk` query tokens (at least one frame's
    row of m keys): peak extra memory O(chunk x m), not O(f x n x m).
    """
    if queries.ndim != 3 or keys.ndim != 3 or queries.shape[0] != keys.shape[0] or queries.shape[2] != keys.shape[2]:
        raise ValueError(
            f"queries (f, n, c) and keys (f, m, c) expected, got {tuple(queries.shape)}, {tuple(keys.shape)}"
        )
    f, n, _ = queries.shape
    chunk = max(1, int(chunk))
    frames_per_block = max(1, chunk // n) if n <= chunk else 1
    tokens_per_block = min(n, chunk)
    out = torch.empty((f, n), dtype=torch.long, device=queries.device)
    for f0 in range(0, f, frames_per_block):
        fs = slice(f0, min(f0 + frames_per_block, f))
        k = F.normalize(keys[fs].float(), dim=-1)
        for n0 in range(0, n, tokens_per_block):
            ns = slice(n0, min(n0 + tokens_per_block, n))
            q = F.normalize(queries[fs, ns].float(), dim=-1)
            out[fs, ns] = torch.bmm(q, k.transpose(1, 2)).argmax(dim=-1)
    return out


def gather_tokens(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (b, f, m, c) gathered along index (f, n) -> (b, f, n, c): out[:, i, p] = values[:, i, index[i, p]]."""
    frames = torch.arange(index.shape[0], device=index.device).unsqueeze(1)
    return values[:, frames, index]


def neighbour_keyframes(frame: int, keyframes: list[int] | tuple[int, ...]) -> list[tuple[int, float]]:
    """The (at most two) keyframes nearest to `frame` on either side, as (position in the sorted
    `keyframes`, weight), weights linear in temporal distance and summing to 1.

    A keyframe itself gets [(its position, 1.0)]; a frame before the first or after the last
    keyframe gets that keyframe alone; otherwise the previous keyframe a and the next b get
    (b - frame) / (b - a) and (frame - a) / (b - a).
    """
    if not keyframes:
        raise ValueError("no keyframes")
    a = bisect.bisect_right(keyframes, frame) - 1  # the last keyframe <= frame
    b = bisect.bisect_left(keyframes, frame)  # the first keyframe >= frame
    if a < 0:
        return [(b, 1.0)]
    if b == len(keyframes):
        return [(a, 1.0)]
    if keyframes[a] == keyframes[b]:
        return [(a, 1.0)]
    span = keyframes[b] - keyframes[a]
    return [(a, (keyframes[b] - frame) / span), (b, (frame - keyframes[a]) / span)]


def propagate(
    frames: list[int] | tuple[int, ...],
    frame_tokens: torch.Tensor,
    keyframes: list[int] | tuple[int, ...],
    keyframe_tokens: torch.Tensor,
    keyframe_values: torch.Tensor,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """TokenFlow's propagation for the frames of one pass.

    frame_tokens (f, n, c): the source tokens of `frames` (global indices); keyframe_tokens
    (K, m, c): the source tokens of `keyframes` (sorted global indices); keyframe_values
    (b, K, m, c): what to move (the edited keyframes' self-attention outputs). Each frame's tokens
    are matched to those of its two nearest keyframes (`neighbour_keyframes`), the keyframe values
    gathered along the matches and blended by temporal distance: returns (b, f, n, c).
    """
    pairs = [(i, p, w) for i, frame in enumerate(frames) for p, w in neighbour_keyframes(frame, keyframes)]
    device = frame_tokens.device
    pair_frame = torch.tensor([i for i, _, _ in pairs], device=device)
    pair_key = torch.tensor([p for _, p, _ in pairs], device=device)
    weights = torch.tensor([w for _, _, w in pairs], device=device, dtype=keyframe_values.dtype)
    index = nearest_neighbours(frame_tokens[pair_frame], keyframe_tokens[pair_key], chunk=chunk)
    moved = keyframe_values[:, pair_key.unsqueeze(1), index] * weights.view(1, -1, 1, 1)  # (b, pairs, n, c)
    b, _, n, c = moved.shape
    out = moved.new_zeros((b, len(frames), n, c))
    return out.index_add_(1, pair_frame, moved)
