"""The passes over a clip that the jobs share: frames flow through in chunks of `runtime.vae_chunk`
(decode -> resize -> VAE), so only latent-sized state spans the whole clip."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from vidinv.config import Config
from vidinv.io.stream import ClipStream, clip_stream


def stream_for(config: Config) -> ClipStream:
    """The configured clip, read `runtime.vae_chunk` frames at a time (0: the whole clip at once)."""
    return clip_stream(config.video, config.runtime.vae_chunk or 2**31)


def encode_stream(models, stream: ClipStream, *, writers=(), progress: bool = False) -> torch.Tensor:
    """Latents (f, c, h, w) of the stream, one VAE call per chunk; each chunk of frames is also
    given to `writers` as it passes."""
    from vidinv.models import encode_frames

    parts = []
    with tqdm(desc="read + vae encode", unit="frame", disable=not progress, leave=False) as bar:
        for frames in stream.chunks():
            for writer in writers:
                writer.write(frames)
            parts.append(encode_frames(models.vae, frames, len(frames)).cpu())
            bar.update(len(frames))
    return torch.cat(parts)


def decode_chunks(models, stream: ClipStream, *latents: torch.Tensor, progress: bool = False) -> Iterator:
    """(source frames, [decoded frames of each latents]) chunk by chunk: the stream read again
    beside each clip of latents (f, c, h, w) decoded in the same chunks."""
    from vidinv.models import decode_latents

    start, total = 0, len(latents[0])
    with tqdm(total=total, desc="vae decode + write", unit="frame", disable=not progress, leave=False) as bar:
        for source in stream.chunks():
            stop = start + len(source)
            yield source, [decode_latents(models.vae, z[start:stop], len(source)) for z in latents]
            start = stop
            bar.update(len(source))


def audio_for(config: Config, stream: ClipStream, frames: int, fps: float):
    """The source's audio for the `frames` frames the stream selected, written at `fps`
    (`vidinv.io.audio.clip_audio`; None when there is none or `runtime.audio` is drop)."""
    from vidinv.io.audio import clip_audio

    v = config.video
    source_fps = stream.fps * v.stride
    return clip_audio(
        v.path, start=v.start, frames=frames, stride=v.stride, fps=source_fps, out_fps=fps, mode=config.runtime.audio
    )
