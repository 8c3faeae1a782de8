"""Attention kernels: torch SDPA, xformers, and a naive reference that materialises the scores.

Every backend takes q (B, H, Lq, D), k and v (B, H, Lk, D), a softmax scale and an optional
additive mask broadcastable to (B, H, Lq, Lk), and returns (B, H, Lq, D) in q's dtype.
`sdpa` and `xformers` never build the (Lq x Lk) score matrix on their memory-efficient kernels;
`naive` does (in float32) and is the reference the tests compare against.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

from vidinv.errors import VidinvError
from vidinv.info import xformers_available, xformers_problem

BACKENDS = ("sdpa", "xformers", "naive")


def resolve_backend(name: str = "auto", device: torch.device | str | None = None) -> str:
    """`auto` = xformers when it runs on this CUDA device (`xformers_problem`), else sdpa (with a
    one-line note when xformers is installed but does not run); named backends are checked."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if name == "auto":
        if device.type != "cuda" or not xformers_available():
            return "sdpa"
        problem = xformers_problem()
        if problem is not None:
            _note_once(f"note: {problem}; attention runs on torch SDPA")
        return "sdpa" if problem else "xformers"
    if name not in BACKENDS:
        raise VidinvError(f"model.attention: {name!r} is not one of auto, {', '.join(BACKENDS)}")
    if name == "xformers":
        if device.type != "cuda":
            raise VidinvError(f"model.attention: 'xformers' needs a CUDA device, the model is on {device.type}")
        problem = xformers_problem()
        if problem is not None:
            raise VidinvError(f"model.attention: 'xformers' asked for, but {problem}")
    return name


@functools.cache
def _note_once(message: str) -> None:
    logging.getLogger("vidinv").warning(message)


def sdpa(q, k, v, *, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=scale)


def naive(q, k, v, *, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * scale
    if mask is not None:
        scores = scores + mask.float()
    probs = scores.softmax(dim=-1)
    return torch.einsum("bhqk,bhkd->bhqd", probs, v.float()).to(q.dtype)


def xformers_attention(q, k, v, *, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    import xformers.ops as xops

    if mask is not None:
        mask = mask.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    # xformers wants (B, L, H, D)
    out = xops.memory_efficient_attention(
        q.transpose(1, 2).contiguous(),
        k.transpose(1, 2).contiguous(),
        v.transpose(1, 2).contiguous(),
        attn_bias=mask,
        scale=scale,
    )
    return out.transpose(1, 2)


KERNELS = {"sdpa": sdpa, "naive": naive, "xformers": xformers_attention}


def attention(q, k, v, *, backend: str, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v on the named backend (not `auto`: resolve it first)."""
    return KERNELS[backend](q, k, v, scale=scale, mask=mask)
