"""Temporal inflation of the SD UNet: cross-frame attention processors and the chunked runner."""

from vidinv.attention.backends import BACKENDS, resolve_backend
from vidinv.attention.frames import MODES, FramePattern, attended_frames
from vidinv.attention.inflate import (
    FrameAttentionHandle,
    frame_attention_of,
    install_frame_attention,
    install_from_config,
    remove_frame_attention,
)
from vidinv.attention.processors import AttentionHook
from vidinv.attention.runner import run_unet

__all__ = [
    "BACKENDS",
    "MODES",
    "AttentionHook",
    "FrameAttentionHandle",
    "FramePattern",
    "attended_frames",
    "frame_attention_of",
    "install_frame_attention",
    "install_from_config",
    "remove_frame_attention",
    "resolve_backend",
    "run_unet",
]
