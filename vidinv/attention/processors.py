"""diffusers attention processors: per-frame attention on a chosen backend, and cross-frame
self-attention driven by a `FrameContext`.

The UNet batch is (b f): b conditions (unconditional / conditional / a source branch, ...) times
the f frames of the current pass. The runner tells the processors that layout through the
handle's `FrameContext` (set for one call, cleared after); frames of one condition only attend to
frames of the same condition.

Hook points (for Plug-and-Play and TokenFlow, not implemented here): objects in
`FrameContext.hooks` may define
- ``qkv(layer, q, k, v, frames)`` -> (q, k, v): called in every cross-frame self-attention layer
  with q, k, v of shape (b, f, n, inner) (projected, heads not yet split) for the global frame
  indices `frames` of the pass, before attention. PnP injection replaces q and k of the edit
  branches by the source branch's: ``q[edit] = q[source]; k[edit] = k[source]`` for chosen
  layers and steps. Keys/values cached for later chunks are taken after the hook, so chunked
  and unchunked runs see the same injected keys.
- ``output(layer, out, frames)`` -> out: called with the self-attention output (b, f, n, c)
  after the output projection. TokenFlow's propagation replaces a frame's tokens by tokens
  gathered from the keyframes' outputs (recorded by the same hook during the keyframe pass).
- ``wants_probs(layer)`` -> bool and ``probs(layer, p, frames)`` -> p or None: for the layers a
  hook wants (self-attention `...attn1` and, through `BackendAttnProcessor`, text cross-attention
  `...attn2`), the processor computes the attention probabilities explicitly,
  p = softmax(q k^T * scale) in float32 of shape (b, q, heads, n_query, n_keys) for the query
  frames `frames` (global indices; one call per bucket of equal key sets), and passes them to the
  hook. A hook that only reads them (FateZero's attention store) returns None and the output is
  the backend's, unchanged; one that returns new probabilities (FateZero's replacement/blend) gets
  out = p @ v. Layers no hook wants never materialise the scores.
- ``wants_text_maps(layer)`` -> bool and ``text_maps(layer, q, k, scale, frames)``: in the joint
  attention of SD3 / Flux (`vidinv.attention.joint`), the image queries and text keys of the layers
  a hook wants, read only (`vidinv.editing.masks`: an edit mask from words of the prompt).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from einops import rearrange

from vidinv.attention.backends import attention
from vidinv.attention.frames import FramePass, FramePattern
from vidinv.errors import VidinvError


class AttentionHook:
    """Base class of hooks on cross-frame self-attention (no-ops; override what you need)."""

    def qkv(self, layer: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: tuple[int, ...]):
        return q, k, v

    def output(self, layer: str, out: torch.Tensor, frames: tuple[int, ...]) -> torch.Tensor:
        return out

    def wants_probs(self, layer: str) -> bool:
        return False

    def probs(self, layer: str, p: torch.Tensor, frames: tuple[int, ...]) -> torch.Tensor | None:
        return None

    def wants_text_maps(self, layer: str) -> bool:
        return False

    def text_maps(self, layer: str, q: torch.Tensor, k: torch.Tensor, scale: float, frames: tuple[int, ...]) -> None:
        """Joint attention (SD3 / Flux): the image tokens' queries q (b, f, n, heads, d) and the text
        tokens' keys k (b, f, L, heads, d) of the frames `frames`, read only (an edit mask's words)."""


class FrameContext:
    """The frame layout of the UNet call in flight and the per-layer key/value cache of a clip.

    Owned by one installed handle; `clip()` sets it for the duration of a step over a clip and
    clears everything on exit, so nothing leaks from one call to the next.
    """

    def __init__(self, pattern: FramePattern):
        self.pattern = pattern
        self.hooks: list[AttentionHook] = []
        self._reset()

    def _reset(self) -> None:
        self.batch: int | None = None
        self.num_frames: int | None = None
        self.current: FramePass | None = None
        self.cache: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._index: dict = {}

    @property
    def active(self) -> bool:
        return self.current is not None

    @contextmanager
    def clip(self, batch: int, num_frames: int):
        """Within this block UNet calls hold `batch` conditions times the frames of the current
        pass; by default one pass over all `num_frames` frames (for calling the UNet directly)."""
        if self.active:
            raise VidinvError("frame attention: a clip is already in flight on this UNet (nested call)")
        self.batch, self.num_frames = batch, num_frames
        self.begin(self.pattern.plan(num_frames)[0])
        try:
            yield self
        finally:
            self._reset()

    @contextmanager
    def suspended(self):
        """Within this block the clip in flight is set aside (its layout and cache kept), so another
        clip can run on the UNet, e.g. between two passes; it is restored exactly on exit."""
        saved = (self.batch, self.num_frames, self.current, self.cache, self._index)
        self._reset()
        try:
            yield self
        finally:
            self.batch, self.num_frames, self.current, self.cache, self._index = saved

    def check_call(self, batch: int, attention_mask) -> None:
        """A one-line error unless a clip layout is set, it has `batch` rows and no mask is given."""
        if not self.active:
            raise VidinvError(
                "frame attention is installed but no clip layout is set: call the model through "
                "vidinv.attention.run_unet (run_flow for SD3 / Flux), or inside `with handle.clip(batch, num_frames):`"
            )
        if attention_mask is not None:
            raise VidinvError("cross-frame attention does not take an attention mask")
        if batch != self.batch * len(self.current.frames):
            raise VidinvError(
                f"frame attention: batch {batch} is not {self.batch} conditions x {len(self.current.frames)} frames"
            )

    def begin(self, frame_pass: FramePass) -> None:
        self.current = frame_pass
        self._index = {}

    def end(self) -> None:
        """Free cached frames that no later pass needs."""
        for layer_cache in self.cache.values():
            for j in self.current.drop:
                layer_cache.pop(j, None)

    def index(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(query, key) positions of each bucket into [pass frames..., cached frames...]."""
        if device not in self._index:
            sources = {j: p for p, j in enumerate(self.current.frames + self.current.cached)}
            self._index[device] = [
                (
                    torch.tensor([[sources[i] for i in qs] for qs in bucket.queries], device=device),
                    torch.tensor([[sources[j] for j in ks] for ks in bucket.keys], device=device),
                )
                for bucket in self.current.buckets
            ]
        return self._index[device]


def _to_tokens(attn, hidden_states, temb):
    """diffusers' input handling: spatial norm, (B, C, H, W) -> (B, HW, C), group norm."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = None
    if hidden_states.ndim == 4:
        shape = hidden_states.shape
        hidden_states = rearrange(hidden_states, "b c h w -> b (h w) c")
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states, shape


def _from_tokens(attn, hidden_states, residual, shape):
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if shape is not None:
        hidden_states = rearrange(hidden_states, "b (h w) c -> b c h w", h=shape[2], w=shape[3])
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


def _heads(x, attn):
    return rearrange(x, "b l (h d) -> b h l d", h=attn.heads)


def _probes(context: FrameContext | None, layer: str | None) -> list:
    """The hooks that want this layer's attention probabilities in the call in flight."""
    if context is None or layer is None or not context.active:
        return []
    return [hook for hook in context.hooks if hook.wants_probs(layer)]


def _probed_attention(hooks, layer, q, k, v, *, backend, scale, mask, batch, group, frames):
    """softmax(q k^T * scale + mask) v with the probabilities shown to `hooks` (see the module docstring).

    q (B h (m n) d), k and v (B h L d), B = batch * s rows of `group` = m query frames each; the
    hooks see p as (batch, s * m, h, n, L) for the query frames `frames`.
    """
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), k.float()) * scale
    if mask is not None:
        scores = scores + mask.float()
    view = rearrange(scores.softmax(dim=-1), "(b s) h (m n) l -> b (s m) h n l", b=batch, m=group)
    replaced = False
    for hook in hooks:
        new = hook.probs(layer, view, frames)
        if new is not None:
            view, replaced = new, True
    if not replaced:  # read only: the backend's output, bit for bit as without the hook
        return attention(q, k, v, backend=backend, scale=scale, mask=mask)
    p = rearrange(view, "b (s m) h n l -> (b s) h (m n) l", m=group)
    return torch.einsum("bhqk,bhkd->bhqd", p.float(), v.float()).to(q.dtype)


class BackendAttnProcessor:
    """Per-sample attention (as diffusers' AttnProcessor2_0) on a chosen backend.

    Used for text cross-attention (`attn2`), which stays per frame. Self-attention gets a
    `FrameAttnProcessor` in every mode (`none` included), so hooks see every step.
    """

    def __init__(self, backend: str = "sdpa", layer: str | None = None, context: FrameContext | None = None):
        self.backend = backend
        self.layer, self.context = layer, context  # set by install_frame_attention: `probs` hooks apply

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        residual = hidden_states
        hidden_states, shape = _to_tokens(attn, hidden_states, temb)
        batch = hidden_states.shape[0]
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        if attention_mask is not None:
            key_length = encoder_hidden_states.shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        q = _heads(attn.to_q(hidden_states), attn)
        k = _heads(attn.to_k(encoder_hidden_states), attn)
        v = _heads(attn.to_v(encoder_hidden_states), attn)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        hooks = _probes(self.context, self.layer)
        if hooks and batch == self.context.batch * len(self.context.current.frames):
            ctx = self.context
            out = _probed_attention(
                hooks,
                self.layer,
                q,
                k,
                v,
                backend=self.backend,
                scale=attn.scale,
                mask=attention_mask,
                batch=ctx.batch,
                group=1,
                frames=ctx.current.frames,
            )
        else:
            out = attention(q, k, v, backend=self.backend, scale=attn.scale, mask=attention_mask)
        out = rearrange(out, "b h l d -> b l (h d)").to(q.dtype)
        return _from_tokens(attn, out, residual, shape)


class FrameAttnProcessor:
    """Cross-frame self-attention (`attn1`): each frame's queries attend to the keys/values of the
    frames its `FramePattern` names, taken from this pass or from the context's cache.

    One attention call per bucket of the pass (key sets of equal shape), so the kernel sees the
    extended key length directly and never a materialised score matrix (except on `naive`).
    """

    def __init__(self, layer: str, context: FrameContext, backend: str = "sdpa"):
        self.layer = layer
        self.context = context
        self.backend = backend

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs
    ):
        ctx = self.context
        if encoder_hidden_states is not None:  # only_cross_attention blocks: text attention, per frame
            return BackendAttnProcessor(self.backend)(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ctx.check_call(hidden_states.shape[0], attention_mask)
        frame_pass, b = ctx.current, ctx.batch
        frames = frame_pass.frames
        residual = hidden_states
        hidden_states, shape = _to_tokens(attn, hidden_states, temb)
        per_frame = "(b f) n c -> b f n c"
        q = rearrange(attn.to_q(hidden_states), per_frame, b=b)
        k = rearrange(attn.to_k(hidden_states), per_frame, b=b)
        v = rearrange(attn.to_v(hidden_states), per_frame, b=b)
        for hook in ctx.hooks:
            q, k, v = hook.qkv(self.layer, q, k, v, frames)

        layer_cache = ctx.cache.setdefault(self.layer, {})
        for j in frame_pass.record:
            pos = frames.index(j)
            layer_cache[j] = (k[:, pos].clone(), v[:, pos].clone())  # not views: free the pass's K/V
        if frame_pass.cached:
            k = torch.cat([k, torch.stack([layer_cache[j][0] for j in frame_pass.cached], dim=1)], dim=1)
            v = torch.cat([v, torch.stack([layer_cache[j][1] for j in frame_pass.cached], dim=1)], dim=1)

        out = torch.empty_like(q)
        hooks = _probes(ctx, self.layer)
        for bucket, (query_pos, key_pos) in zip(frame_pass.buckets, ctx.index(q.device)):
            qb = rearrange(q[:, query_pos], "b s m n (h d) -> (b s) h (m n) d", h=attn.heads)
            kb = rearrange(k[:, key_pos], "b s k n (h d) -> (b s) h (k n) d", h=attn.heads)
            vb = rearrange(v[:, key_pos], "b s k n (h d) -> (b s) h (k n) d", h=attn.heads)
            if attn.norm_q is not None:
                qb = attn.norm_q(qb)
            if attn.norm_k is not None:
                kb = attn.norm_k(kb)
            if hooks:
                queries = tuple(i for frame_set in bucket.queries for i in frame_set)  # host-side: no device read
                ob = _probed_attention(
                    hooks,
                    self.layer,
                    qb,
                    kb,
                    vb,
                    backend=self.backend,
                    scale=attn.scale,
                    mask=None,
                    batch=b,
                    group=query_pos.shape[1],
                    frames=queries,
                )
            else:
                ob = attention(qb, kb, vb, backend=self.backend, scale=attn.scale)
            out[:, query_pos] = rearrange(ob, "(b s) h (m n) d -> b s m n (h d)", b=b, m=query_pos.shape[1]).to(
                out.dtype
            )

        out = attn.to_out[1](attn.to_out[0](out))
        for hook in ctx.hooks:
            out = hook.output(self.layer, out, frames)
        out = rearrange(out, "b f n c -> (b f) n c")
        if shape is not None:
            out = rearrange(out, "b (h w) c -> b c h w", h=shape[2], w=shape[3])
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
