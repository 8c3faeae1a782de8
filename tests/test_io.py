"""vidinv.io on real clips: decoding, frame selection, resizing, writers, and one-line errors."""

from __future__ import annotations

import math
import struct

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidinv.errors import VidinvError
from vidinv.io import FOLDER_FPS, Video, frames_from_uint8, frames_to_uint8, read_video, side_by_side, write_video

SMALL = (64, 128)  # (height, width) used wherever the size does not matter
DECODERS = ("decord", "pyav")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of frames in [-1, 1] (peak-to-peak 2)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def stream_facts(path) -> tuple[int, float, tuple[int, int]]:
    """(frames, fps, (height, width)) as the container states them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.frames, float(stream.average_rate), (stream.height, stream.width)


@pytest.fixture(scope="module")
def small_clip(bikes_path) -> Video:
    return read_video(bikes_path, start=40, num_frames=6, size=SMALL)


@pytest.fixture(scope="module")
def head_of_bikes(bikes_path) -> dict[str, Video]:
    """The first 30 frames, every one, per decoder: the reference for selections."""
    return {d: read_video(bikes_path, num_frames=30, size=SMALL, decoder=d) for d in DECODERS}


def save_pngs(folder, pictures: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for picture, name in zip(pictures, names):
        Image.fromarray(picture).save(folder / name)


# --- decoding ---------------------------------------------------------------------------------


def test_bikes_decodes_to_all_frames_at_source_size_and_fps_in_range(bikes_path):
    frames, fps, source_size = stream_facts(bikes_path)
    clip = read_video(bikes_path, size=SMALL)
    assert len(clip) == frames and clip.fps == fps == 25.0
    assert clip.source_size == source_size and clip.frames.shape[1:] == (3, *SMALL)
    assert clip.frames.dtype == torch.float32
    assert clip.frames.min() >= -1 and clip.frames.max() <= 1 and clip.frames.std() > 0.1


@pytest.mark.parametrize("decoder", DECODERS)
def test_start_and_stride_select_those_source_frames(bikes_path, head_of_bikes, decoder):
    start, stride, count = 3, 4, 6
    clip = read_video(bikes_path, start=start, stride=stride, num_frames=count, size=SMALL, decoder=decoder)
    expected = head_of_bikes[decoder].frames[start : start + stride * count : stride]
    assert len(clip) == count
    torch.testing.assert_close(clip.frames, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("decoder", DECODERS)
def test_num_frames_none_reads_to_the_end_with_fps_divided_by_stride(sample_path, decoder):
    total, fps, _ = stream_facts(sample_path)
    clip = read_video(sample_path, start=5, stride=3, decoder=decoder)
    assert len(clip) == len(range(5, total, 3))
    assert clip.fps == pytest.approx(fps / 3)


def test_decord_and_pyav_decode_the_same_frames(head_of_bikes):
    decord_frames, pyav_frames = head_of_bikes["decord"].frames, head_of_bikes["pyav"].frames
    assert decord_frames.shape == pyav_frames.shape
    assert (decord_frames - pyav_frames).abs().max() <= 2 / 255


# --- size and resize --------------------------------------------------------------------------


@pytest.mark.parametrize("resize", ["center_crop", "stretch", "pad"])
@pytest.mark.parametrize("size", [(64, 128), (128, 64), (64, None), (None, 128)])
def test_resize_modes_give_the_requested_shape_with_derived_side_by_aspect(sample_path, size, resize):
    clip = read_video(sample_path, num_frames=2, size=size, resize=resize)
    height, width = clip.frames.shape[-2:]
    src_h, src_w = clip.source_size
    if size[0] is not None:
        assert height == size[0]
    else:  # derived from the width, rounded down to a multiple of 8
        assert height % 8 == 0 and height <= width * src_h / src_w < height + 8
    if size[1] is not None:
        assert width == size[1]
    else:
        assert width % 8 == 0 and width <= height * src_w / src_h < width + 8


def test_pad_letterboxes_with_black_and_center_crop_fills_the_frame(sample_path):
    # the source (136x320) is wider than 64x64: pad leaves black rows above and below, crop does not
    padded = read_video(sample_path, num_frames=1, size=(64, 64), resize="pad").frames[0]
    cropped = read_video(sample_path, num_frames=1, size=(64, 64), resize="center_crop").frames[0]
    assert torch.all(padded[:, 0] == -1) and torch.all(padded[:, -1] == -1)
    assert padded[:, 32].std() > 0.05
    assert cropped[:, 0].std() > 0.05 and cropped[:, -1].std() > 0.05


def test_size_none_crops_the_source_down_to_multiples_of_8(tmp_path, small_clip):
    pictures = frames_to_uint8(small_clip.frames)[:, :30, :50]  # 30x50: neither a multiple of 8
    save_pngs(tmp_path / "odd", pictures, [f"{i}.png" for i in range(len(pictures))])
    clip = read_video(tmp_path / "odd")
    assert clip.source_size == (30, 50) and clip.frames.shape[-2:] == (24, 48)
    # a crop, not a rescale: the middle of the source, pixel for pixel
    torch.testing.assert_close(clip.frames, frames_from_uint8(pictures)[..., 3:27, 1:49], rtol=0, atol=0)


# --- image folders ----------------------------------------------------------------------------


def test_image_folder_is_read_in_natural_name_order_at_the_fps_given(tmp_path, small_clip):
    pictures = frames_to_uint8(small_clip.frames)[:3]
    names = ["frame10.png", "frame2.jpg", "frame1.bmp"]  # natural order: frame1, frame2, frame10
    save_pngs(tmp_path / "imgs", pictures[[2, 1, 0]], names)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    clip = read_video(tmp_path / "imgs", size=SMALL)
    assert len(clip) == 3 and clip.fps == FOLDER_FPS
    errors = [(clip.frames[i] - frames_from_uint8(pictures)[i]).abs().mean() for i in range(3)]
    assert max(errors) < 0.05  # frame i matches picture i (the jpg is lossy)
    assert read_video(tmp_path / "imgs", fps=12.0, stride=2).fps == 6.0


# --- writing ----------------------------------------------------------------------------------


def test_mp4_round_trip_keeps_count_fps_size_and_psnr_above_30db(tmp_path, small_clip):
    path = write_video(tmp_path / "clip.mp4", small_clip.frames, small_clip.fps)
    back = read_video(path)
    assert len(back) == len(small_clip) and back.fps == pytest.approx(small_clip.fps)
    assert back.frames.shape == small_clip.frames.shape
    assert psnr(back.frames, small_clip.frames) > 30


def test_mp4_with_odd_size_is_padded_to_even(tmp_path, small_clip):
    odd = small_clip.frames[..., :63, :125]
    path = write_video(tmp_path / "odd.mp4", odd, 10.0)
    _, _, (height, width) = stream_facts(path)
    assert (height, width) == (64, 126)
    back = read_video(path, size=(64, 120), resize="stretch")  # decodes; the padded edge repeats the last row
    assert len(back) == len(small_clip)


def test_gif_round_trip_keeps_count_fps_and_psnr_above_30db(tmp_path, small_clip):
    path = write_video(tmp_path / "clip.gif", small_clip.frames, small_clip.fps)
    back = read_video(path)
    assert len(back) == len(small_clip) and back.fps == pytest.approx(small_clip.fps)
    assert psnr(back.frames, small_clip.frames) > 30


def test_png_folder_round_trip_is_exact_in_8_bits(tmp_path, small_clip):
    folder = write_video(tmp_path / "frames", small_clip.frames, small_clip.fps)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["frame_00000.png", "frame_00001.png"]
    back = read_video(folder, fps=small_clip.fps)
    np.testing.assert_array_equal(frames_to_uint8(back.frames), frames_to_uint8(small_clip.frames))
    assert write_video(tmp_path / "as.png.folder", small_clip.frames, 8, format="png").is_dir()


def test_uint8_pictures_and_chunk_iterables_write_like_float_frames(tmp_path, small_clip):
    pictures = frames_to_uint8(small_clip.frames)
    write_video(tmp_path / "whole", small_clip.frames, 8)
    write_video(tmp_path / "u8", pictures, 8)
    write_video(tmp_path / "chunks", (small_clip.frames[i : i + 4] for i in range(0, len(small_clip), 4)), 8)
    reads = [frames_to_uint8(read_video(tmp_path / name).frames) for name in ("whole", "u8", "chunks")]
    for other in reads[1:]:
        np.testing.assert_array_equal(reads[0], other)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif", "frames"])
def test_interrupted_write_leaves_no_final_file_and_keeps_the_old_one(tmp_path, small_clip, name):
    def interrupted():
        yield small_clip.frames[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / name, interrupted(), 8)
    assert list(tmp_path.iterdir()) == []

    write_video(tmp_path / name, small_clip.frames, 8)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / name, interrupted(), 8)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert len(read_video(tmp_path / name)) == len(small_clip)


@pytest.mark.parametrize("name", ["clip.mp4", "frames"])
def test_a_writer_finished_early_gives_the_same_bytes_and_appears_only_at_the_end(tmp_path, small_clip, name):
    from vidinv.io.writing import VideoWriter

    write_video(tmp_path / "whole" / name, small_clip.frames, 8)
    with VideoWriter(tmp_path / "early" / name, 8) as writer:
        writer.write(small_clip.frames)
        writer.finish()  # the encoder flushed and closed; the file keeps its partial name
        assert not (tmp_path / "early" / name).exists()
        with pytest.raises(VidinvError, match="after finish"):
            writer.write(small_clip.frames[:1])
    assert _bytes(tmp_path / "early" / name) == _bytes(tmp_path / "whole" / name)

    with pytest.raises(KeyboardInterrupt), VideoWriter(tmp_path / "stopped" / name, 8) as writer:
        writer.write(small_clip.frames)
        writer.finish()
        raise KeyboardInterrupt
    assert list((tmp_path / "stopped").iterdir()) == []


def _bytes(path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(path.iterdir())] if path.is_dir() else [path.read_bytes()]


# --- helpers ----------------------------------------------------------------------------------


def test_side_by_side_concatenates_along_width(small_clip):
    joined = side_by_side(small_clip, small_clip.frames[..., :32])
    assert joined.shape == (len(small_clip), 3, SMALL[0], SMALL[1] + 32)
    assert torch.equal(joined[..., SMALL[1] :], small_clip.frames[..., :32])
    with pytest.raises(VidinvError):
        side_by_side(small_clip.frames, small_clip.frames[:2])


def test_uint8_conversion_round_trips_8_bit_values(small_clip):
    pictures = frames_to_uint8(small_clip.frames)
    assert pictures.dtype == np.uint8 and pictures.shape == (len(small_clip), *SMALL, 3)
    np.testing.assert_array_equal(frames_to_uint8(frames_from_uint8(pictures)), pictures)


def test_committed_sample_is_a_small_32_frame_excerpt_at_source_fps(sample_path, bikes_path):
    frames, fps, (height, width) = stream_facts(sample_path)
    _, source_fps, (src_h, src_w) = stream_facts(bikes_path)
    assert frames == 32 and fps == source_fps
    assert height % 8 == 0 and width % 8 == 0 and height / width == pytest.approx(src_h / src_w, rel=0.02)
    assert sample_path.stat().st_size < 300_000


# --- errors -----------------------------------------------------------------------------------


def zeroed_mp4(tmp_path, clip: Video):
    """An mp4 whose index is intact but whose frame data is zeroed: nothing decodes."""
    path = write_video(tmp_path / "zeroed.mp4", clip.frames, 8)
    data = bytearray(path.read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, small_clip) -> dict:
    """name -> (path, read_video keywords) for every kind of bad input."""
    tmp_path, clip = tmp_path_factory.mktemp("bad"), small_clip
    (tmp_path / "notes.txt").write_text("this is not a video\n")
    (tmp_path / "empty_folder").mkdir()
    good = write_video(tmp_path / "good.mp4", clip.frames, 8)
    return {
        "missing file": (tmp_path / "missing.mp4", {}),
        "text file": (tmp_path / "notes.txt", {}),
        "zero decodable frames": (zeroed_mp4(tmp_path, clip), {}),
        "start past the end": (good, {"start": 100}),
        "empty image folder": (tmp_path / "empty_folder", {}),
        "height not a multiple of 8": (good, {"size": (60, None)}),
        "width not a multiple of 8": (good, {"size": (64, 100)}),
        "stride below 1": (good, {"stride": 0}),
    }


BAD = ["missing file", "text file", "zero decodable frames", "start past the end", "empty image folder",
       "height not a multiple of 8", "width not a multiple of 8", "stride below 1"]  # fmt: skip


@pytest.mark.parametrize("decoder", ["auto", *DECODERS])
@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_one_line_vidinv_error_naming_the_file(bad_inputs, small_clip, case, decoder):
    path, kwargs = bad_inputs[case]
    with pytest.raises(VidinvError) as info:
        read_video(path, decoder=decoder, **kwargs)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    if case == "start past the end":
        assert f"{len(small_clip)} frames" in message
    if "multiple of 8" in case:
        assert "multiple of 8" in message
