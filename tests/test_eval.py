"""`vidinv eval`: metrics of an edited clip against its source, for vidinv's output or anyone's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
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


def test_an_edited_clip_of_another_size_is_a_one_line_error_naming_both_sizes(tmp_path, capsys):
    write_video(tmp_path / "src.mp4", clip(), 8)
    write_video(tmp_path / "big.mp4", torch.nn.functional.interpolate(clip(), size=(128, 192)), 8)
    assert main(["eval", str(tmp_path / "src.mp4"), str(tmp_path / "big.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "192x128" in err[0] and "96x64" in err[0] and "--resize" in err[0]


def test_with_resize_an_edited_clip_of_another_size_is_stretched_to_the_source(tmp_path, capsys):
    write_video(tmp_path / "src.mp4", clip(), 8)
    write_video(tmp_path / "big.mp4", torch.nn.functional.interpolate(clip(), size=(128, 192)), 8)
    assert main(["eval", str(tmp_path / "src.mp4"), str(tmp_path / "big.mp4"), "--resize"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert (metrics["height"], metrics["width"]) == read_video(tmp_path / "src.mp4").frames.shape[2:]
    assert metrics["psnr_vs_source_db"] > 25


def test_different_frame_counts_are_a_one_line_error(tmp_path, capsys):
    write_video(tmp_path / "src.mp4", clip(frames=4), 8)
    write_video(tmp_path / "short.mp4", clip(frames=3), 8)
    assert main(["eval", str(tmp_path / "src.mp4"), str(tmp_path / "short.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 frames" in err[0] and "has 4" in err[0]


# --- eval against the run's own metrics.json (issue 28) ----------------------------------------------------------

SMALL = ["video.num_frames=4", "video.height=64", "video.width=64", "inversion.steps=2"]
SELECTIONS = {"first4": dict(start=0, num_frames=4, stride=1), "start3_stride2": dict(start=3, num_frames=4, stride=2)}
RUNS = {"first4": ("ffv1", "h264"), "start3_stride2": ("png",)}
EDITED = {"h264": "edited.mp4", "ffv1": "edited.mkv", "png": "edited"}
SOURCE = {"h264": "source.mp4", "ffv1": "source.mkv", "png": "source"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sample_path) -> dict[tuple[str, str], Path]:
    """Tiny demo edits: (selection, codec) -> run folder."""
    folders = {}
    for name, codecs in RUNS.items():
        s = SELECTIONS[name]
        for codec in codecs:
            out = tmp_path_factory.mktemp(f"{name}_{codec}")
            args = [f"video.path={sample_path}", *SMALL, f"video.start={s['start']}", f"video.stride={s['stride']}"]
            args += [f"runtime.codec={codec}", f"runtime.output_dir={out}", "runtime.overwrite=true"]
            assert main(["--quiet", "edit", str(REPO / "configs" / "demo.yaml"), *args]) == 0
            folders[name, codec] = out
    return folders


def selection_flags(name: str) -> list[str]:
    s = SELECTIONS[name]
    return ["--start", str(s["start"]), "--num-frames", str(s["num_frames"]), "--stride", str(s["stride"])]


def eval_json(capsys, tmp_path, *args: str) -> dict:
    path = tmp_path / "eval.json"
    assert main(["--quiet", "eval", *args, "--json", str(path)]) == 0
    capsys.readouterr()
    return json.loads(path.read_text())


@pytest.mark.parametrize(("name", "codec"), [("first4", "ffv1"), ("start3_stride2", "png")])
def test_eval_of_lossless_outputs_gives_the_runs_metrics_exactly(runs, sample_path, tmp_path, capsys, name, codec):
    """The original full clip with the run's selection and resize, or the run's own lossless
    source, against the lossless edited clip: the run's metrics.json numbers, to the last bit."""
    run = runs[name, codec]
    metrics = json.loads((run / "metrics.json").read_text())
    from_original = eval_json(
        capsys,
        tmp_path,
        str(sample_path),
        str(run / EDITED[codec]),
        *selection_flags(name),
        "--source-resize",
        "center_crop",
    )
    from_outputs = eval_json(capsys, tmp_path, str(run / SOURCE[codec]), str(run / EDITED[codec]))
    for measured in (from_original, from_outputs):
        assert {key: measured[key] for key in metrics["temporal_consistency"]} == metrics["temporal_consistency"]
        assert (measured["frames"], measured["height"], measured["width"]) == (4, 64, 64)
    assert from_original["fps"]["source"] == metrics["fps"]  # the source's fps / stride, as the run's
    assert from_original["selection"] == SELECTIONS[name]


def codec_error_bounds(sample_path, lossless: Path, lossy: Path) -> tuple[float, float]:
    """What the docs predict H.264 may move warp_error_edited and frame_change_edited by: the warp
    error of the codec's error d itself along the source's flow, and d's own frame change."""
    import cv2

    from vidinv.metrics import source_flows

    source = read_video(sample_path, num_frames=4, size=(64, 64), decoder="pyav").frames
    d = read_video(lossy, decoder="pyav").frames - read_video(lossless, decoder="pyav").frames  # [-1, 1] units
    rgb = (d / 2).permute(0, 2, 3, 1).numpy()  # in [0, 1] units, as warp_errors measures
    pairs = []
    for i, (where, valid) in enumerate(source_flows(source)):
        warped = cv2.remap(rgb[i], where[..., 0], where[..., 1], cv2.INTER_LINEAR)
        if valid.any():
            pairs.append(float(np.abs(warped - rgb[i + 1])[valid].mean()))
    return sum(pairs) / len(pairs), float((d[1:] - d[:-1]).abs().mean() / 2)


def test_eval_of_an_h264_edit_differs_only_by_the_codecs_error_within_the_stated_bound(
    runs, sample_path, tmp_path, capsys
):
    lossless, lossy = runs["first4", "ffv1"], runs["first4", "h264"]
    metrics = json.loads((lossy / "metrics.json").read_text())["temporal_consistency"]
    # the run measures its pictures before any codec: the h264 run's metrics are the ffv1 run's
    assert metrics == json.loads((lossless / "metrics.json").read_text())["temporal_consistency"]
    flags = [*selection_flags("first4"), "--source-resize", "center_crop"]
    measured = eval_json(capsys, tmp_path, str(sample_path), str(lossy / "edited.mp4"), *flags)
    for key in ("warp_error_source", "frame_change_source"):  # the source is decoded as the run decoded it
        assert measured[key] == metrics[key], key
    warp_bound, change_bound = codec_error_bounds(sample_path, lossless / "edited.mkv", lossy / "edited.mp4")
    warp_moved = abs(measured["warp_error_edited"] - metrics["warp_error_edited"])
    change_moved = abs(measured["frame_change_edited"] - metrics["frame_change_edited"])
    assert 0 < warp_moved <= warp_bound + 1e-6, (warp_moved, warp_bound)
    assert 0 < change_moved <= change_bound + 1e-6, (change_moved, change_bound)
    # the case: the run's H.264 source.mp4 as SOURCE carries the codec's error into the source's metrics
    both_mp4 = eval_json(capsys, tmp_path, str(lossy / "source.mp4"), str(lossy / "edited.mp4"))
    assert both_mp4["warp_error_source"] != metrics["warp_error_source"]


def test_the_comparison_measures_8bit_pictures_and_is_the_same_over_any_chunks(sample_path):
    from vidinv.io.video import frames_from_uint8, frames_to_uint8
    from vidinv.metrics import ClipComparison

    source = read_video(sample_path, num_frames=7, size=(64, 96)).frames  # resized: not on 8-bit levels
    edited = source + 0.1 * torch.randn(source.shape, generator=torch.Generator().manual_seed(0))  # past [-1, 1] too
    whole = compare_clips(source, edited)
    assert whole == compare_clips(
        frames_from_uint8(frames_to_uint8(source)), frames_from_uint8(frames_to_uint8(edited))
    )
    for chunk in (1, 3):
        streamed = ClipComparison()
        for start in range(0, len(source), chunk):
            streamed.update(source[start : start + chunk], edited[start : start + chunk])
        assert streamed.result() == whole, chunk


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--stride", "0"], "stride must be >= 1, got 0"),
        (["--start", "-1"], "start must be >= 0, got -1"),
        (["--num-frames", "0"], "num_frames must be >= 1"),
        (["--start", "40"], "start 40 is past the end (it has 32 frames)"),
        (["--resize", "--source-resize", "pad"], "exclude each other"),
        (["--num-frames", "3", "--stride", "2"], "4 frames, but the source"),
    ],
)
def test_bad_selections_are_one_line_errors_with_exit_2_and_write_nothing(sample_path, tmp_path, capsys, flags, words):
    edited = tmp_path / "edited"
    write_video(edited, clip(frames=4, h=64, w=64), 8, format="png")
    fit = [] if "--source-resize" in flags else ["--source-resize", "center_crop"]  # the bikes clip to 64x64
    argv = ["eval", str(sample_path), str(edited), *flags, *fit, "--json", str(tmp_path / "m.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidinv: error: ") and words in err[0], err
    assert not (tmp_path / "m.json").exists()
