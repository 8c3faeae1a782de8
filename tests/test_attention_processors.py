"""The cross-frame processor on one diffusers Attention layer against an explicit per-frame loop."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

from vidinv.attention.frames import MODES, FramePattern
from vidinv.attention.processors import AttentionHook, FrameAttnProcessor, FrameContext
from vidinv.errors import VidinvError

B, F, N, C = 2, 5, 6, 16
PARAMS = {"keyframes": "stride", "keyframe_stride": 2, "group": 2}


def _layer():
    torch.manual_seed(0)
    return Attention(query_dim=C, heads=2, dim_head=8).eval()


def _reference(attn, x, pattern):
    """Frame i of condition b: softmax(q_i K^T) V with K, V from the attended frames of condition b."""
    x = x.view(B, F, N, C)
    out = torch.empty_like(x)
    for b in range(B):
        for i in range(F):
            src = torch.cat([x[b, j] for j in pattern.attended(i, F)])
            q = attn.to_q(x[b, i]).view(N, 2, 8).transpose(0, 1)
            k = attn.to_k(src).view(-1, 2, 8).transpose(0, 1)
            v = attn.to_v(src).view(-1, 2, 8).transpose(0, 1)
            probs = (q @ k.transpose(1, 2) * attn.scale).softmax(-1)
            out[b, i] = attn.to_out[0]((probs @ v).transpose(0, 1).reshape(N, C))
    return out.view(B * F, N, C)


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
@pytest.mark.parametrize("mode", MODES)
def test_processor_equals_the_explicit_per_frame_loop(mode, backend):
    attn, pattern = _layer(), FramePattern(mode, **PARAMS)
    context = FrameContext(pattern)
    attn.set_processor(FrameAttnProcessor("layer", context, backend))
    x = torch.randn(B * F, N, C)
    with torch.no_grad(), context.clip(B, F):
        got = attn(x)
        want = _reference(attn, x, pattern)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_processor_without_a_clip_layout_explains_how_to_call_it():
    context = FrameContext(FramePattern("full"))
    attn = _layer()
    attn.set_processor(FrameAttnProcessor("layer", context))
    with pytest.raises(VidinvError, match="run_unet"):
        attn(torch.randn(B * F, N, C))


def test_processor_rejects_a_batch_that_is_not_conditions_times_frames():
    context = FrameContext(FramePattern("full"))
    attn = _layer()
    attn.set_processor(FrameAttnProcessor("layer", context))
    with pytest.raises(VidinvError, match="conditions"), context.clip(B, F):
        attn(torch.randn(B * F + 1, N, C))


def test_context_is_cleared_after_the_clip_even_on_error():
    context = FrameContext(FramePattern("sparse_causal"))
    with pytest.raises(RuntimeError), context.clip(B, F):
        context.cache["x"] = {}
        raise RuntimeError
    assert not context.active and context.cache == {} and context.batch is None


class _Recorder(AttentionHook):
    def __init__(self):
        self.calls = []

    def qkv(self, layer, q, k, v, frames):
        self.calls.append(("qkv", layer, tuple(q.shape), frames))
        return q, k, v

    def output(self, layer, out, frames):
        self.calls.append(("output", layer, tuple(out.shape), frames))
        return out


def test_hooks_see_per_condition_per_frame_tensors():
    attn, pattern = _layer(), FramePattern("sparse_causal")
    context = FrameContext(pattern)
    recorder = _Recorder()
    context.hooks.append(recorder)
    attn.set_processor(FrameAttnProcessor("layer", context))
    with torch.no_grad(), context.clip(B, F):
        attn(torch.randn(B * F, N, C))
    frames = tuple(range(F))
    assert recorder.calls == [("qkv", "layer", (B, F, N, C), frames), ("output", "layer", (B, F, N, C), frames)]


def test_a_qkv_hook_can_inject_the_source_branch_queries_and_keys():
    """PnP-style: branch 1 with branch 0's q and k gets branch 0's attention map over its own values."""

    class Inject(AttentionHook):
        def qkv(self, layer, q, k, v, frames):
            q, k = q.clone(), k.clone()
            q[1], k[1] = q[0], k[0]
            return q, k, v

    attn = _layer()
    context = FrameContext(FramePattern("full", group=F))
    context.hooks.append(Inject())
    attn.set_processor(FrameAttnProcessor("layer", context))
    x = torch.randn(B * F, N, C)
    x_same = torch.cat([x[:F], x[:F]])
    with torch.no_grad(), context.clip(B, F):
        got = attn(x)
        same = attn(x_same)
    assert not torch.allclose(got[F:], got[:F])
    torch.testing.assert_close(same[F:], same[:F])


@pytest.mark.parametrize("mode", MODES)
def test_passes_with_the_kv_cache_equal_one_pass_and_cache_only_the_needed_frames(mode):
    attn, pattern = _layer(), FramePattern(mode, **PARAMS)
    context = FrameContext(pattern)
    attn.set_processor(FrameAttnProcessor("layer", context))
    x = torch.randn(B, F, N, C)
    with torch.no_grad():
        with context.clip(B, F):
            whole = attn(x.flatten(0, 1)).view(B, F, N, C)
        chunked = torch.empty_like(whole)
        with context.clip(B, F):
            for frame_pass in pattern.plan(F, 2):
                context.begin(frame_pass)
                chunked[:, list(frame_pass.frames)] = attn(x[:, list(frame_pass.frames)].flatten(0, 1)).view(
                    B, -1, N, C
                )
                cache = context.cache["layer"]
                assert set(frame_pass.cached) | set(frame_pass.record) <= set(cache)
                for k, v in cache.values():  # own storage, not views that keep a pass's K/V alive
                    assert k.untyped_storage().nbytes() == k.numel() * k.element_size() == v.numel() * v.element_size()
                context.end()
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
