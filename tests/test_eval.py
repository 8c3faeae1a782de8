"""`vidinv eval`: metrics of an edited clip against its source, for vidinv's output or anyone's."""

from __future__ import annotations

import json

import torch

from vidinv.cli import main
from vidinv.io import read_video, write_video
from vidinv.metrics import compare_clips


def clip(frames=4, h=64, w=96, seed=0):
    base = torch.nn.functional.interpolate(
        torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(seed)), size=(h, w + frames), mode="bicubic"
    )
    return torch.cat([base[..., i : i + w] for i in range(frames)]).clamp(0, 1) * 2 - 1


def test_a_clip_compared_with_itself_is_perfectly_consistent_and_identical(tmp_path, capsys):
    write_video(tmp_path / "a", clip(), 8, format="png")
    assert main(["eval", str(tmp_path / "a"), str(tmp_path / "a"), "--json", str(tmp_path / "m.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "m.json").read_text())
    assert printed["warp_error_edited"] == printed["warp_error_source"]
    assert printed["frame_change_edited"] == printed["frame_change_source"]
    assert printed["psnr_vs_source_db"] is None and printed["frames"] == 4  # identical: infinite, null in JSON


def test_a_flickering_edit_scores_worse_than_a_steady_one():
    source = clip()
    steady = source * 0.5  # a global edit that follows the motion
    flicker = steady.clone()
    flicker[1::2] = -flicker[1::2]
    steady_m, flicker_m = compare_clips(source, steady), compare_clips(source, flicker)
    assert flicker_m["warp_error_edited"] > 5 * steady_m["warp_error_edited"]
    assert flicker_m["frame_change_edited"] > steady_m["frame_change_edited"]


def test_an_edited_clip_of_another_size_is_resized_to_the_source(tmp_path, capsys):
    write_video(tmp_path / "src.mp4", clip(), 8)
    write_video(tmp_path / "big.mp4", torch.nn.functional.interpolate(clip(), size=(128, 192)), 8)
    assert main(["eval", str(tmp_path / "src.mp4"), str(tmp_path / "big.mp4")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["height"], metrics["width"]) == read_video(tmp_path / "src.mp4").frames.shape[2:]
    assert metrics["psnr_vs_source_db"] > 25


def test_different_frame_counts_are_a_one_line_error(tmp_path, capsys):
    write_video(tmp_path / "src.mp4", clip(frames=4), 8)
    write_video(tmp_path / "short.mp4", clip(frames=3), 8)
    assert main(["eval", str(tmp_path / "src.mp4"), str(tmp_path / "short.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 frames" in err[0] and "has 4" in err[0]
