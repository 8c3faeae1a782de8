"""Cross-frame attention inflated into the joint (image + text) attention of SD3 and Flux transformers.

A joint attention layer attends over one sequence per sample: the frame's image tokens and its
text tokens (SD3: [image, text]; Flux: [text, image], rotary position embeddings on both; Flux's
single-stream blocks get that sequence already joined). Inflated, the queries of frame i (its
image and text tokens) attend to the image tokens of the frames its `FramePattern` names and to
frame i's own text tokens:

    keys(i) = [image tokens of attended(i)..., text tokens of i]     (in the model's order)

so `frame_attention=none` is the model's own attention, and text stays per frame. Hooks
(`FrameContext.hooks`, e.g. PnP injection) see the image tokens' q, k, v of every layer before
attention, (b, f, n, heads, d), text tokens untouched. Image keys and
values (after q/k norms and rotary embeddings: an anchor keeps its own positions, the same grid
as every frame's) of frames later passes attend to are cached per layer, as for the UNet
(`vidinv.attention.processors`), so chunked == unchunked.

    handle = install_joint_frame_attention(transformer, "keyframe", "sdpa")   # or install_frame_attention
    v = run_flow(models, z, t, cond, chunk=8)                 # vidinv.attention.flow_runner
"""

from __future__ import annotations

import torch
from einops import rearrange

from vidinv.attention.backends import attention, resolve_backend
from vidinv.attention.frames import FramePattern
from vidinv.attention.handle import HANDLE_ATTR, FrameAttentionHandle, frame_attention_of, remove_frame_attention
from vidinv.attention.processors import FrameContext

SINGLE_STREAM_PREFIX = "single_transformer_blocks."


class JointFrameContext(FrameContext):
    """A FrameContext that also knows the text length of the call in flight (Flux's single blocks)."""

    text_tokens: int = 0


def is_joint_transformer(module) -> bool:
    """True for diffusers' SD3 / Flux transformers (joint-attention DiTs)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    return isinstance(module, (SD3Transformer2DModel, FluxTransformer2DModel))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return rearrange(x, "B L (h d) -> B L h d", h=heads)


class JointFrameAttnProcessor:
    """Joint attention with cross-frame image keys (module docstring), for SD3's `Attention`
    (JointAttnProcessor2_0) and Flux's `FluxAttention` (FluxAttnProcessor), double or single stream."""

    def __init__(self, layer: str, context: JointFrameContext, backend: str = "sdpa", *, single_stream: bool = False):
        self.layer, self.context, self.backend, self.single_stream = layer, context, backend, single_stream

    def _qkv(self, attn, hidden_states, encoder_hidden_states):
        """q, k, v (B L h d) of the joint sequence in the model's order, normed, and the text length."""
        heads = attn.heads
        q, k, v = (_split_heads(proj(hidden_states), heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        text_first = self.text_first(attn)
        if encoder_hidden_states is None:
            return q, k, v, (self.context.text_tokens if self.single_stream else 0), text_first
        eq, ek, ev = (
            _split_heads(proj(encoder_hidden_states), heads)
            for proj in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )
        if attn.norm_added_q is not None:
            eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
        order = (lambda img, txt: (txt, img)) if text_first else (lambda img, txt: (img, txt))
        q, k, v = (torch.cat(order(a, b), dim=1) for a, b in ((q, eq), (k, ek), (v, ev)))
        return q, k, v, encoder_hidden_states.shape[1], text_first

    @staticmethod
    def text_first(attn) -> bool:
        from diffusers.models.transformers.transformer_flux import FluxAttention

        return isinstance(attn, FluxAttention)

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None, **kwargs
    ):
        ctx = self.context
        ctx.check_call(hidden_states.shape[0], attention_mask)
        frame_pass, b = ctx.current, ctx.batch
        frames = frame_pass.frames
        q, k, v, n_text, text_first = self._qkv(attn, hidden_states, encoder_hidden_states)
        if image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        image = slice(n_text, None) if text_first else slice(0, q.shape[1] - n_text)
        text = slice(0, n_text) if text_first else slice(q.shape[1] - n_text, None)
        per_frame = "(b f) L h d -> b f L h d"
        q, k, v = (rearrange(x, per_frame, b=b) for x in (q, k, v))
        if ctx.hooks:  # PnP: hooks see (and may replace) the image tokens' q, k, v (b f n h d)
            q, k, v = q.clone(), k.clone(), v.clone()
            for hook in ctx.hooks:
                q[:, :, image], k[:, :, image], v[:, :, image] = hook.qkv(
                    self.layer, q[:, :, image], k[:, :, image], v[:, :, image], frames
                )
        for hook in ctx.hooks:  # read only: an edit mask's text-token maps
            if hook.wants_text_maps(self.layer):
                hook.text_maps(self.layer, q[:, :, image], k[:, :, text], q.shape[-1] ** -0.5, frames)
        k_img, v_img = k[:, :, image], v[:, :, image]

        layer_cache = ctx.cache.setdefault(self.layer, {})
        for j in frame_pass.record:
            pos = frames.index(j)
            layer_cache[j] = (k_img[:, pos].clone(), v_img[:, pos].clone())
        if frame_pass.cached:
            k_img = torch.cat([k_img, torch.stack([layer_cache[j][0] for j in frame_pass.cached], dim=1)], dim=1)
            v_img = torch.cat([v_img, torch.stack([layer_cache[j][1] for j in frame_pass.cached], dim=1)], dim=1)

        out = torch.empty_like(q)
        scale = q.shape[-1] ** -0.5
        for query_pos, key_pos in ctx.index(q.device):
            m = query_pos.shape[1]
            qb = rearrange(q[:, query_pos], "b s m L h d -> (b s m) h L d")
            keys = []
            for source_img, source in ((k_img, k), (v_img, v)):
                img = (
                    rearrange(source_img[:, key_pos], "b s k n h d -> b s (k n) h d")
                    .unsqueeze(2)
                    .expand(-1, -1, m, -1, -1, -1)
                )
                txt = source[:, query_pos][:, :, :, text]
                joint = torch.cat((txt, img) if text_first else (img, txt), dim=3)
                keys.append(rearrange(joint, "b s m K h d -> (b s m) h K d"))
            ob = attention(qb, keys[0], keys[1], backend=self.backend, scale=scale)
            out[:, query_pos] = rearrange(ob, "(b s m) h L d -> b s m L h d", b=b, m=m).to(out.dtype)

        out = rearrange(out, "b f L h d -> (b f) L (h d)")
        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](out)) if getattr(attn, "to_out", None) is not None else out
        img_out, txt_out = out[:, image], out[:, text]
        img_out = attn.to_out[1](attn.to_out[0](img_out.contiguous()))
        if not getattr(attn, "context_pre_only", False):
            txt_out = attn.to_add_out(txt_out.contiguous())
        return img_out, txt_out


def install_joint_frame_attention(transformer, pattern: FramePattern, backend: str = "auto"):
    """Replace every joint attention processor of an SD3 / Flux transformer by a cross-frame one;
    returns the `FrameAttentionHandle` (removed with `remove_frame_attention`)."""
    backend = resolve_backend(backend, next(transformer.parameters()).device)
    if frame_attention_of(transformer) is not None:
        remove_frame_attention(transformer)
    original = dict(transformer.attn_processors)
    context = JointFrameContext(pattern)
    processors = {}
    for name in original:
        layer = name.rsplit(".", 1)[0]
        processors[name] = JointFrameAttnProcessor(
            layer, context, backend, single_stream=name.startswith(SINGLE_STREAM_PREFIX)
        )
    transformer.set_attn_processor(processors)
    handle = FrameAttentionHandle(
        transformer, pattern, backend, context, original, tuple(p.rsplit(".", 1)[0] for p in original)
    )
    setattr(transformer, HANDLE_ATTR, handle)
    return handle
