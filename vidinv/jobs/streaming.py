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
    """Latents (f, c, h, w) of the stream (Wan: its latent frames), one VAE call per chunk; each
    chunk of frames is also given to `writers` as it passes."""
    from vidinv.models.vae import finish_encoding, frame_encoder

    parts, encoder = [], frame_encoder(models.vae)
    with tqdm(desc="read + vae encode", unit="frame", disable=not progress, leave=False) as bar:
        for frames in stream.chunks():
            for writer in writers:
                writer.write(frames)
            parts.append(encoder.push(frames).cpu())
            bar.update(len(frames))
    return finish_encoding(encoder, parts).cpu()


class DecodedFrames:
    """The frames of a clip's latents (f, c, h, w), decoded in order and taken `n` at a time: only
    what one take needs (plus a causal VAE's last group) is decoded and held."""

    def __init__(self, vae, latents: torch.Tensor):
        from vidinv.models.vae import frame_decoder

        self.decoder, self.latents = frame_decoder(vae), latents
        self.next, self.held = 0, None

    def take(self, n: int) -> torch.Tensor:
        parts = [] if self.held is None else [self.held]
        have = sum(len(p) for p in parts)
        whole = getattr(self.decoder, "whole_clip", False)  # a whole-clip video VAE: decoded at once
        while have < n and self.next < len(self.latents):
            count = len(self.latents) if whole else max(1, -(-(n - have) // self.decoder.frames_per_latent))
            parts.append(self.decoder.push(self.latents[self.next : self.next + count]))
            self.next += count
            have += len(parts[-1])
        frames = torch.cat(parts)
        self.held = frames[n:] if len(frames) > n else None
        return frames[:n]


def decode_chunks(models, stream: ClipStream, *latents: torch.Tensor, progress: bool = False) -> Iterator:
    """(source frames, [decoded frames of each latents]) chunk by chunk: the stream read again
    beside each clip of latents (f, c, h, w), decoded chunk by chunk to the source's chunks."""
    clips = [DecodedFrames(models.vae, z) for z in latents]
    with tqdm(
        total=stream.num_frames, desc="vae decode + write", unit="frame", disable=not progress, leave=False
    ) as bar:
        for source in stream.chunks():
            yield source, [clip.take(len(source)) for clip in clips]
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
