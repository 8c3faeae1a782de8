"""The handle of an installed cross-frame attention (`inflate.install_frame_attention`,
`joint.install_joint_frame_attention`): stored on the model instance, where `run_unet` finds it,
and the way back to the processors that were there before."""

from __future__ import annotations

from dataclasses import dataclass

from vidinv.attention.frames import FramePattern
from vidinv.attention.processors import FrameContext

HANDLE_ATTR = "_vidinv_frame_attention"


@dataclass
class FrameAttentionHandle:
    """What `install_frame_attention` did to one UNet, and the context its processors read."""

    unet: object
    pattern: FramePattern
    backend: str
    context: FrameContext
    original: dict  # processor name -> the processor object installed before
    self_layers: tuple[str, ...]  # layer names with cross-frame attention

    @property
    def mode(self) -> str:
        return self.pattern.mode

    @property
    def hooks(self) -> list:
        """AttentionHook objects called by every cross-frame layer (see processors.py)."""
        return self.context.hooks

    def clip(self, batch: int, num_frames: int):
        """Context manager: direct UNet calls inside it see (batch x num_frames) as conditions x frames."""
        return self.context.clip(batch, num_frames)

    def remove(self) -> None:
        remove_frame_attention(self.unet)


def frame_attention_of(unet) -> FrameAttentionHandle | None:
    """The handle installed on this UNet, or None."""
    return unet.__dict__.get(HANDLE_ATTR)


def remove_frame_attention(unet) -> bool:
    """Restore the processors that were there before install (the same objects); False if none was installed."""
    handle = frame_attention_of(unet)
    if handle is None:
        return False
    unet.set_attn_processor(dict(handle.original))
    del unet.__dict__[HANDLE_ATTR]
    return True
