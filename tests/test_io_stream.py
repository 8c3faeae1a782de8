"""ClipStream: chunked reading equals reading the whole clip, and is repeatable."""

from __future__ import annotations

import pytest
import torch

from vidinv.errors import VidinvError
from vidinv.io import read_video
from vidinv.io.selection import FrameSelection
from vidinv.io.stream import ClipStream


@pytest.mark.parametrize(("chunk", "size"), [(1, (64, 96)), (4, None), (16, (48, None))])
def test_chunks_equal_the_whole_clip_read_and_a_second_pass_repeats_them(sample_path, chunk, size):
    selection = FrameSelection(start=3, num_frames=9, stride=2)
    stream = ClipStream(sample_path, selection, size=size, chunk=chunk)
    parts = list(stream.chunks())
    assert all(len(p) <= chunk for p in parts) and stream.num_frames == 9
    whole = read_video(sample_path, start=3, num_frames=9, stride=2, size=size)
    assert torch.equal(torch.cat(parts), whole.frames) and stream.fps == whole.fps
    assert (stream.height, stream.width) == tuple(whole.frames.shape[-2:])
    assert torch.equal(torch.cat(list(stream.chunks())), whole.frames)


def test_an_image_folder_streams_like_read_video(tmp_path, sample_path):
    from PIL import Image

    from vidinv.io import frames_to_uint8

    for i, picture in enumerate(frames_to_uint8(read_video(sample_path, num_frames=5).frames)):
        Image.fromarray(picture).save(tmp_path / f"f{i}.png")
    stream = ClipStream(tmp_path, FrameSelection(start=1), chunk=2)
    assert torch.equal(torch.cat(list(stream.chunks())), read_video(tmp_path, start=1).frames)


def test_a_start_past_the_end_is_a_one_line_error(sample_path):
    stream = ClipStream(sample_path, FrameSelection(start=10_000), chunk=4)
    with pytest.raises(VidinvError, match="no frames") as err:
        list(stream.chunks())
    assert "\n" not in str(err.value)
