"""Install / remove cross-frame attention on any diffusers UNet2DConditionModel.

    handle = install_frame_attention(unet, "keyframe", backend="sdpa", keyframes="stride", keyframe_stride=4)
    eps = run_unet(unet, z, t, emb, chunk=8)      # frames of z attend across frames
    remove_frame_attention(unet)                  # the UNet's original processors, as they were

Self-attention layers (`attn1` of every transformer block, i.e. Attention modules that are not
cross-attention) get a `FrameAttnProcessor`; every other attention layer (text cross-attention
`attn2`) gets a per-frame `BackendAttnProcessor` on the same backend. The handle is stored on the
UNet instance (attribute `_vidinv_frame_attention`) so `run_unet` finds it; it owns the
`FrameContext` through which the runner passes the frame layout to the processors.
"""

from __future__ import annotations

import logging

from vidinv.attention.backends import resolve_backend
from vidinv.attention.frames import FramePattern
from vidinv.attention.handle import HANDLE_ATTR, FrameAttentionHandle, frame_attention_of, remove_frame_attention
from vidinv.attention.joint import install_joint_frame_attention, is_joint_transformer
from vidinv.attention.processors import BackendAttnProcessor, FrameAttnProcessor, FrameContext
from vidinv.attention.video_joint import install_video_joint_attention, is_video_joint_transformer

__all__ = [
    "FrameAttentionHandle",
    "ensure_frame_attention",
    "frame_attention_of",
    "install_frame_attention",
    "install_from_config",
    "remove_frame_attention",
]


def _is_self_attention(unet, processor_name: str) -> bool:
    module = unet.get_submodule(processor_name.rsplit(".", 1)[0])
    return not getattr(module, "is_cross_attention", True) and not getattr(module, "only_cross_attention", False)


def install_frame_attention(
    unet,
    mode: str = "sparse_causal",
    backend: str = "auto",
    *,
    keyframes: str = "first",
    keyframe_stride: int = 8,
    group: int = 16,
) -> FrameAttentionHandle:
    """Replace the UNet's attention processors by frame-aware ones; returns the handle.

    Installing again replaces the previous installation (the originals kept are still the ones
    from before the first install).
    """
    pattern = FramePattern(mode, keyframes, keyframe_stride, group)
    if is_joint_transformer(unet):  # SD3 / Flux: cross-frame keys in their joint attention
        return install_joint_frame_attention(unet, pattern, backend)
    if is_video_joint_transformer(unet):  # CogVideoX: the clip is one sample, hooks only (mode none)
        return install_video_joint_attention(unet, backend)
    backend = resolve_backend(backend, next(unet.parameters()).device)
    previous = frame_attention_of(unet)
    if previous is not None:
        remove_frame_attention(unet)
    original = dict(unet.attn_processors)
    context = FrameContext(pattern)
    processors, self_layers = {}, []
    for name in original:
        layer = name.rsplit(".", 1)[0]
        if _is_self_attention(unet, name):
            processors[name] = FrameAttnProcessor(layer, context, backend)
            self_layers.append(layer)
        else:
            processors[name] = BackendAttnProcessor(backend, layer, context)
    unet.set_attn_processor(processors)
    handle = FrameAttentionHandle(unet, pattern, backend, context, original, tuple(self_layers))
    setattr(unet, HANDLE_ATTR, handle)
    return handle


log = logging.getLogger("vidinv")


def is_video_transformer(model) -> bool:
    """A native video transformer (Wan 2.1, LTX-Video: the denoiser class of a `Family.video` record):
    it attends over the whole latent clip itself."""
    from vidinv.models.families import FAMILIES

    return type(model).__name__ in {family.denoiser for family in FAMILIES.values() if family.video}


def install_from_config(unet, model_config) -> FrameAttentionHandle | None:
    """Install the mode/backend/parameters of a `ModelConfig` (config.model); nothing on a native
    video transformer (a note when a cross-frame mode was asked for)."""
    if is_video_transformer(unet):
        if model_config.frame_attention != "none":
            log.warning(
                "note: model.frame_attention=%s is not applied: the video transformer attends across all frames itself",
                model_config.frame_attention,
            )
        return None
    return install_frame_attention(
        unet,
        model_config.frame_attention,
        model_config.attention,
        keyframes=model_config.keyframes,
        keyframe_stride=model_config.keyframe_stride,
        group=model_config.attention_group,
    )


def ensure_frame_attention(unet, backend: str = "auto") -> FrameAttentionHandle:
    """The installed handle, or per-frame (`none`) attention installed now: a UNet whose
    self-attention processors carry hooks (PnP, TokenFlow, FateZero) in any case."""
    return frame_attention_of(unet) or install_frame_attention(unet, "none", backend)
