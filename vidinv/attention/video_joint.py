"""Hooks in the joint (text + video) attention of a native video DiT: CogVideoX's, for PnP.

CogVideoX's attention runs over one sequence per sample, its T5 tokens then the whole latent clip's
tokens ([text, video]); the clip is one sample, so there are no frames for vidinv's cross-frame
attention to join. Installed, every layer computes what diffusers' `CogVideoXAttnProcessor2_0` does
(q/k norms, rotary embeddings on the video tokens, one scaled-dot-product attention), and the hooks
(`FrameContext.hooks`: PnP's injection) see, and may replace, the video tokens' q, k, v before the
attention, as (b 1 n h d): the clip as one "frame" of its f h w tokens; the text tokens stay the row's.
A hook that `wants_video_maps` (an edit mask's word maps) reads the video queries (b n h d) and the
text keys (b l h d) of every layer.

    handle = install_video_joint_attention(transformer)    # `install_frame_attention` dispatches here
    remove_frame_attention(transformer)                     # diffusers' processors back
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from vidinv.attention.frames import FramePattern
from vidinv.attention.handle import HANDLE_ATTR, FrameAttentionHandle, frame_attention_of, remove_frame_attention
from vidinv.attention.processors import FrameContext

VIDEO_JOINT_PROCESSORS = ("CogVideoXAttnProcessor2_0",)  # diffusers' processors this module stands in for


def is_video_joint_transformer(module) -> bool:
    """True for a transformer whose attention processors are all CogVideoX's joint ones."""
    processors = getattr(module, "attn_processors", None)
    if not processors:
        return False
    return all(type(p).__name__ in VIDEO_JOINT_PROCESSORS for p in processors.values())


class VideoJointAttnProcessor:
    """CogVideoX's joint attention with hooks on the video tokens' q, k, v (module docstring)."""

    def __init__(self, layer: str, context: FrameContext):
        self.layer, self.context = layer, context

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        n_text = encoder_hidden_states.shape[1]
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        b = x.shape[0]
        q, k, v = (
            proj(x).view(b, -1, attn.heads, proj.out_features // attn.heads)
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # b h L d, as diffusers' processor holds them
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            q[:, :, n_text:] = apply_rotary_emb(q[:, :, n_text:], image_rotary_emb)
            k[:, :, n_text:] = apply_rotary_emb(k[:, :, n_text:], image_rotary_emb)
        if self.context.hooks:  # PnP: the video tokens' q, k, v as (b 1 n h d)
            video = [rearrange(t[:, :, n_text:], "b h n d -> b 1 n h d") for t in (q, k, v)]
            for hook in self.context.hooks:
                video = hook.qkv(self.layer, *video, (0,))
            q, k, v = (
                torch.cat([t[:, :, :n_text], rearrange(new, "b 1 n h d -> b h n d")], dim=2)
                for t, new in zip((q, k, v), video)
            )
        for hook in self.context.hooks:  # read only: an edit mask's word maps, video queries on text keys
            if getattr(hook, "wants_video_maps", lambda layer: False)(self.layer):
                video_q, text_k = (rearrange(t, "b h n d -> b n h d") for t in (q[:, :, n_text:], k[:, :, :n_text]))
                hook.video_maps(video_q, text_k, q.shape[-1] ** -0.5)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1])))
        return out[:, n_text:], out[:, :n_text]


def install_video_joint_attention(transformer, backend: str = "sdpa") -> FrameAttentionHandle:
    """Replace every joint attention processor of a CogVideoX transformer by a hooked one; returns the
    handle (its `self_layers`: every attention layer), removed with `remove_frame_attention`.
    `backend`: kept on the handle; the attention is torch's scaled-dot-product, as diffusers' processor's."""
    if frame_attention_of(transformer) is not None:
        remove_frame_attention(transformer)
    original = dict(transformer.attn_processors)
    context = FrameContext(FramePattern("none"))
    layers = {name: name.rsplit(".", 1)[0] for name in original}
    transformer.set_attn_processor({name: VideoJointAttnProcessor(layer, context) for name, layer in layers.items()})
    handle = FrameAttentionHandle(transformer, context.pattern, backend, context, original, tuple(layers.values()))
    setattr(transformer, HANDLE_ATTR, handle)
    return handle
