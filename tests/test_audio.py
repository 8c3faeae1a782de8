"""The source's audio in edited.mp4 and side_by_side.mp4, cut to the selected frames; dropped with
a note when the frames are strided, and on request (runtime.audio=drop)."""

from __future__ import annotations

import hashlib
import logging

import av
import numpy as np
import pytest

from vidinv.cli import main
from vidinv.io.audio import clip_audio
from vidinv.io.writing import write_video

FPS, FRAMES, RATE = 8, 24, 16000
LOW_HZ, HIGH_HZ, SWITCH_S = 440, 1760, 1.5  # the tone changes at 1.5 s (frame 12)


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory):
    """3 s of 32x32 video at 8 fps with a mono tone that changes pitch at 1.5 s (AAC)."""
    path = tmp_path_factory.mktemp("audio") / "clip.mp4"
    t = np.arange(FRAMES * RATE // FPS) / RATE
    tone = (0.5 * np.sin(2 * np.pi * np.where(t < SWITCH_S, LOW_HZ, HIGH_HZ) * t)).astype(np.float32)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=RATE, layout="mono")
        for i in range(FRAMES):
            picture = np.full((32, 32, 3), i * 10, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        for k in range(0, len(tone), 1000):
            frame = av.AudioFrame.from_ndarray(tone[None, k : k + 1000], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = RATE, k
            container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


def audio_of(path) -> tuple[float, np.ndarray] | None:
    """(the audio stream's duration in seconds, its decoded samples), or None without audio."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        samples = np.concatenate([frame.to_ndarray()[0] for frame in container.decode(stream)])
        return float(stream.duration * stream.time_base), samples


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[spectrum.argmax()])


@pytest.mark.slow
def test_the_edit_carries_the_audio_of_the_selected_frames_and_drop_leaves_it_out(tmp_path, clip_with_audio):
    out = tmp_path / "run"
    args = ["--quiet", "edit", "configs/demo.yaml", f"video.path={clip_with_audio}", "video.start=12"]
    args += [
        "video.num_frames=8",
        "video.height=32",
        "video.width=32",
        "inversion.steps=2",
        f"runtime.output_dir={out}",
    ]
    assert main(args) == 0
    for name in ("edited.mp4", "side_by_side.mp4"):
        seconds, samples = audio_of(out / name)
        assert abs(seconds - 8 / FPS) <= 1 / FPS, name  # frames 12..19: 1 s, within a frame
        assert abs(len(samples) / RATE - 8 / FPS) <= 1 / FPS, name
        assert abs(dominant_hz(samples) - HIGH_HZ) < 20, name  # cut after the switch at frame 12
    assert audio_of(out / "source.mp4") is None

    assert main([*args, "runtime.audio=drop", "runtime.overwrite=true"]) == 0  # the record is reused
    assert audio_of(out / "edited.mp4") is None and audio_of(out / "side_by_side.mp4") is None


def test_strided_frames_drop_the_audio_with_one_note(clip_with_audio, caplog):
    with caplog.at_level(logging.WARNING, logger="vidinv"):
        assert clip_audio(clip_with_audio, start=0, frames=8, stride=2, fps=FPS, out_fps=FPS / 2) is None
    assert len(caplog.records) == 1 and "video.stride=2" in caplog.records[0].getMessage()
    kept = clip_audio(clip_with_audio, start=4, frames=8, stride=1, fps=FPS, out_fps=FPS)
    assert (kept.start_s, kept.duration_s) == (0.5, 1.0)


def test_a_video_with_audio_written_twice_gives_the_same_bytes(tmp_path, clip_with_audio):
    source = clip_audio(clip_with_audio, start=0, frames=FRAMES, stride=1, fps=FPS, out_fps=FPS)
    pictures = np.random.default_rng(0).integers(0, 256, (FRAMES, 32, 32, 3), dtype=np.uint8)
    digests = set()
    for name in ("a.mp4", "b.mp4"):
        write_video(tmp_path / name, pictures, FPS, audio=source)
        digests.add(hashlib.md5((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1
    seconds, _ = audio_of(tmp_path / "a.mp4")
    assert abs(seconds - FRAMES / FPS) <= 1 / FPS
