"""Cross-frame attention in SD3 / Flux joint attention: none == diffusers, chunked == unchunked, and a
frame sees exactly the frames its pattern names."""

from __future__ import annotations

import pytest
import torch

from vidinv.attention import install_frame_attention, remove_frame_attention
from vidinv.attention.flow_runner import run_flow
from vidinv.attention.joint import JointFrameAttnProcessor
from vidinv.inversion.flow_denoiser import flow_rows
from vidinv.models import load_models

FRAMES = 4


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux"])
def flow_models(request):
    return load_models(request.param, dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def clip_inputs(flow_models):
    cond, _ = flow_rows(flow_models, "a red car", 4.0)
    z = torch.randn(cond.rows, FRAMES, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    return z, cond


def velocities(models, z, cond, mode=None, chunk=None, **params):
    if mode is not None:
        install_frame_attention(models.transformer, mode, "sdpa", **params)
    try:
        return run_flow(models, z, 700.0, cond, chunk=chunk)
    finally:
        remove_frame_attention(models.transformer)


def test_every_joint_layer_gets_the_cross_frame_processor_and_removal_restores_diffusers(flow_models):
    transformer = flow_models.transformer
    before = dict(transformer.attn_processors)
    handle = install_frame_attention(transformer, "keyframe", "sdpa")
    assert all(isinstance(p, JointFrameAttnProcessor) for p in transformer.attn_processors.values())
    assert len(handle.self_layers) == len(before)
    remove_frame_attention(transformer)
    assert all(transformer.attn_processors[name] is p for name, p in before.items())


def test_mode_none_is_the_models_own_attention(flow_models, clip_inputs):
    z, cond = clip_inputs
    assert torch.equal(velocities(flow_models, z, cond, "none"), velocities(flow_models, z, cond))


@pytest.mark.parametrize(
    "mode, params",
    [("sparse_causal", {}), ("keyframe", {"keyframes": "stride", "keyframe_stride": 2}), ("full", {"group": 2})],
)
def test_chunked_equals_unchunked(flow_models, clip_inputs, mode, params):
    z, cond = clip_inputs
    whole = velocities(flow_models, z, cond, mode, None, **params)
    chunked = velocities(flow_models, z, cond, mode, 1, **params)
    assert torch.allclose(chunked, whole, atol=1e-5), (chunked - whole).abs().max()


def test_a_frame_sees_only_its_anchors_and_its_own_text(flow_models, clip_inputs):
    """keyframe (first): frame i's velocity depends on frames {0, i} alone; with every frame equal to
    the anchor, each frame's keys are its own tokens, so the result is per-frame attention."""
    z, cond = clip_inputs
    base = velocities(flow_models, z, cond, "keyframe")
    moved = z.clone()
    moved[:, 2] += 1.0
    changed = velocities(flow_models, moved, cond, "keyframe")
    assert torch.equal(changed[:, [0, 1, 3]], base[:, [0, 1, 3]]) and not torch.equal(changed[:, 2], base[:, 2])
    same = z[:, :1].expand(-1, FRAMES, -1, -1, -1).contiguous()
    assert torch.allclose(
        velocities(flow_models, same, cond, "keyframe"), velocities(flow_models, same, cond), atol=1e-5
    )
