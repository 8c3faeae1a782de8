"""The inflated tiny UNet: plain-UNet equivalences, backend parity, chunked == unchunked, install/remove."""

from __future__ import annotations

import pytest
import torch

from vidinv import transforms as tf
from vidinv.attention import (
    MODES,
    frame_attention_of,
    install_frame_attention,
    install_from_config,
    remove_frame_attention,
    run_unet,
)
from vidinv.config import ModelConfig
from vidinv.errors import VidinvError

T = 501
PARAMS = {
    "none": {},
    "sparse_causal": {},
    "keyframe": {"keyframes": "stride", "keyframe_stride": 2},
    "full": {"group": 2},
}


@pytest.fixture()
def unet(tiny_models):
    """The tiny UNet without frame attention."""
    unet = tiny_models.unet
    remove_frame_attention(unet)
    yield unet
    remove_frame_attention(unet)


def _inputs(b=2, f=5, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, f, 4, h, w, generator=g), torch.randn(b, 7, 32, generator=g)


@pytest.mark.parametrize("mode", MODES)
def test_one_frame_in_any_mode_equals_the_plain_unet(unet, mode):
    z, emb = _inputs(f=1)
    plain = run_unet(unet, z, T, emb)
    install_frame_attention(unet, mode, "sdpa", keyframes="middle", group=4)
    torch.testing.assert_close(run_unet(unet, z, T, emb), plain, atol=1e-5, rtol=0)


def test_mode_none_equals_the_plain_unet_for_many_frames(unet):
    z, emb = _inputs(f=5)
    plain = run_unet(unet, z, T, emb)
    install_frame_attention(unet, "none", "sdpa")
    torch.testing.assert_close(run_unet(unet, z, T, emb), plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_identical_frames_give_identical_outputs(unet, mode):
    z, emb = _inputs(f=1)
    z = z.expand(-1, 5, -1, -1, -1).contiguous()
    install_frame_attention(unet, mode, "sdpa", **PARAMS[mode])
    eps = run_unet(unet, z, T, emb)
    for i in range(1, 5):
        torch.testing.assert_close(eps[:, i], eps[:, 0], atol=1e-5, rtol=0)


# Written out by hand for 4 frames with PARAMS (not read from vidinv.attention.frames).
ANCHORS_OF_4 = {
    "none": [[0], [1], [2], [3]],
    "sparse_causal": [[0], [0], [0, 1], [0, 2]],
    "keyframe": [[0, 2]] * 4,
    "full": [[0, 1], [0, 1], [2, 3], [2, 3]],
}


def attention_over_anchors(attn, x: torch.Tensor, anchors: list[list[int]]) -> torch.Tensor:
    """Self-attention of layer `attn` for hidden states x (b f n c), frame i of condition b
    attending to the keys/values of the frames anchors[i] of condition b: softmax(q K^T / sqrt(d)) V."""
    assert attn.group_norm is None and attn.spatial_norm is None and attn.norm_q is None
    assert not attn.residual_connection and attn.rescale_output_factor == 1.0
    b, f, n, c = x.shape
    heads = attn.heads
    out = torch.empty(b, f, n, attn.to_out[0].out_features)
    for cond in range(b):
        for i in range(f):
            kv = torch.cat([x[cond, j] for j in anchors[i]])  # (m n) c
            q = attn.to_q(x[cond, i]).unflatten(-1, (heads, -1)).transpose(0, 1)  # h n d
            k = attn.to_k(kv).unflatten(-1, (heads, -1)).transpose(0, 1)
            v = attn.to_v(kv).unflatten(-1, (heads, -1)).transpose(0, 1)
            probs = (q @ k.transpose(1, 2) / q.shape[-1] ** 0.5).softmax(-1)
            out[cond, i] = attn.to_out[0]((probs @ v).transpose(0, 1).flatten(1))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_every_self_attention_layer_attends_over_exactly_its_anchor_frames(unet, mode):
    """Inside the inflated UNet, each self-attention layer's output equals an explicit attention of
    each frame's queries over the keys/values of its anchor frames (same condition only)."""
    z, emb = _inputs(f=4)
    install_frame_attention(unet, mode, "sdpa", **PARAMS[mode])
    seen = {}
    layers = {name: m for name, m in unet.named_modules() if name.endswith("attn1")}
    hooks = [
        m.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, (args[0], out)))
        for name, m in layers.items()
    ]
    try:
        run_unet(unet, z, T, emb)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen.keys() == layers.keys() and len(layers) >= 2
    for name, (hidden, out) in seen.items():
        x = hidden.unflatten(0, (2, 4))  # (b f) n c -> b f n c
        expected = attention_over_anchors(layers[name], x, ANCHORS_OF_4[mode])
        torch.testing.assert_close(out.unflatten(0, (2, 4)), expected, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_sdpa_equals_naive(unet, mode):
    z, emb = _inputs(f=5)
    install_frame_attention(unet, mode, "naive", **PARAMS[mode])
    reference = run_unet(unet, z, T, emb)
    install_frame_attention(unet, mode, "sdpa", **PARAMS[mode])
    torch.testing.assert_close(run_unet(unet, z, T, emb), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize(
    "mode, params",
    [
        ("none", {}),
        ("sparse_causal", {}),
        ("keyframe", {"keyframes": "first"}),
        ("keyframe", {"keyframes": "middle"}),
        ("keyframe", {"keyframes": "stride", "keyframe_stride": 2}),
        ("full", {"group": 2}),
        ("full", {"group": 3}),
    ],
)
def test_chunked_equals_unchunked(unet, mode, params, chunk):
    z, emb = _inputs(f=6)
    install_frame_attention(unet, mode, "sdpa", **params)
    whole = run_unet(unet, z, T, emb)
    torch.testing.assert_close(run_unet(unet, z, T, emb, chunk=chunk), whole, atol=1e-5, rtol=0)


def test_chunked_sparse_causal_on_rotated_non_square_latents(unet):
    """FreeInv rotates the whole clip per step: 90 degrees turns an 8x16 latent into 16x8."""
    z, emb = _inputs(f=5, h=8, w=16)
    z = torch.rot90(z, 1, dims=(-2, -1))
    install_frame_attention(unet, "sparse_causal", "sdpa")
    whole = run_unet(unet, z, T, emb)
    assert whole.shape == z.shape
    torch.testing.assert_close(run_unet(unet, z, T, emb, chunk=2), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", tf.GROUPS["dihedral"])
def test_per_pass_transform_and_reduction_equal_the_whole_clip_ones_bit_for_bit(unet, name):
    """run_unet(transform=f, reduce=r) == r(f^{-1}(run_unet(f(z)))) exactly: each pass's input is
    transformed and its output inverted and reduced (a permutation of entries and a frame-wise
    combination), chunked, with rows gathered from two clips."""
    z, emb = _inputs(b=2, f=5)
    emb = torch.cat([emb, emb[:1]])  # three condition rows over the two clips
    rows = [0, 1, 1]
    install_frame_attention(unet, "sparse_causal", "sdpa")
    combine = lambda p: torch.stack([p[0], p[2] - p[1]])  # noqa: E731 (rows -> 2 reduced rows)
    whole = combine(tf.invert(name, run_unet(unet, tf.apply(name, z), T, emb, chunk=2, rows=rows)))
    per_pass = run_unet(unet, z, T, emb, chunk=2, rows=rows, transform=name, reduce=combine)
    assert per_pass.shape == whole.shape == (2, *z.shape[1:])
    assert torch.equal(per_pass, whole)


@pytest.mark.parametrize("mode", ["sparse_causal", "full"])
def test_frames_of_one_condition_attend_only_to_that_condition(unet, mode):
    z, emb = _inputs(b=2, f=4)
    install_frame_attention(unet, mode, "sdpa", group=4)
    both = run_unet(unet, z, T, emb)
    alone = run_unet(unet, z[1:], T, emb[1:])
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)


def test_install_then_remove_leaves_the_unet_exactly_as_it_was(unet):
    z, emb = _inputs(f=3)
    before = dict(unet.attn_processors)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    modules = [name for name, _ in unet.named_modules()]
    plain = run_unet(unet, z, T, emb)
    handle = install_frame_attention(unet, "full", "naive", group=3)
    assert len(handle.self_layers) == 7  # attn1 of 2 down, 1 mid and 4 up transformer blocks
    install_frame_attention(unet, "sparse_causal", "sdpa")  # re-install replaces
    run_unet(unet, z, T, emb, chunk=2)
    assert remove_frame_attention(unet) is True
    assert remove_frame_attention(unet) is False
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert frame_attention_of(unet) is None and not hasattr(unet, "_vidinv_frame_attention")
    assert [name for name, _ in unet.named_modules()] == modules
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert torch.equal(run_unet(unet, z, T, emb), plain)


def test_direct_unet_calls_need_a_clip_layout(unet):
    z, emb = _inputs(b=1, f=3)
    handle = install_frame_attention(unet, "sparse_causal", "sdpa")
    sample, context = z[0], emb.expand(3, -1, -1)
    with pytest.raises(VidinvError, match="run_unet"):
        unet(sample, T, encoder_hidden_states=context)
    with torch.no_grad(), handle.clip(1, 3):
        direct = unet(sample, T, encoder_hidden_states=context).sample
    torch.testing.assert_close(direct, run_unet(unet, z, T, emb)[0], atol=1e-6, rtol=0)
    assert not handle.context.active


def test_install_from_config_reads_mode_backend_and_parameters(unet):
    config = ModelConfig(frame_attention="keyframe", attention="auto", keyframes="stride", keyframe_stride=3)
    handle = install_from_config(unet, config)
    assert (handle.mode, handle.backend, handle.pattern.anchors(7)) == ("keyframe", "sdpa", (0, 3, 6))
    assert ModelConfig().frame_attention == "sparse_causal"


def test_the_anchor_cache_is_empty_after_a_chunked_call(unet):
    z, emb = _inputs(f=5)
    handle = install_frame_attention(unet, "keyframe", "sdpa", keyframes="stride", keyframe_stride=2)
    run_unet(unet, z, T, emb, chunk=2)
    assert handle.context.cache == {} and not handle.context.active


def test_an_sdxl_shaped_unet_inflates_and_chunks_with_added_conditions():
    """SDXL's UNet: text_time added embeddings, several transformer layers per block, linear projections."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(4, 8),
        transformer_layers_per_block=(1, 2),
        norm_num_groups=16,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=16 + 6 * 8,
        use_linear_projection=True,
    ).eval()
    z, emb = _inputs(f=4)
    added = {"text_embeds": torch.randn(2, 16), "time_ids": torch.randn(2, 6)}
    plain = run_unet(unet, z, T, emb, added_cond_kwargs=added)
    handle = install_frame_attention(unet, "sparse_causal", "sdpa")
    assert len(handle.self_layers) == 8
    whole = run_unet(unet, z, T, emb, added_cond_kwargs=added)
    torch.testing.assert_close(run_unet(unet, z, T, emb, chunk=3, added_cond_kwargs=added), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole[:, 0], plain[:, 0], atol=1e-5, rtol=0)
