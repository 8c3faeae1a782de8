"""`vidinv eval`: metrics of an edited clip against its source, for vidinv's output or anyone's: the
weight-free ones, those of the unedited region (--mask), and CLIP-T/CLIP-F with a tiny random CLIP."""

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

TARGET = "a robot riding a bike"  # configs/demo.yaml's edit.target_prompt


def write_tiny_clip(folder: Path) -> Path:
    """A CLIP of random weights (2-layer 32-wide text and vision towers, 32x32 images, 16-dim
    embeddings) over the tiny model's tokenizer, with its image processor, saved as a folder."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    from vidinv.models.tiny import build_tiny_tokenizer, tiny_text_config

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    config = CLIPConfig(text_config=tiny_text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    with torch.random.fork_rng(devices=[]):  # seeded, the global generator left as it was
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=build_tiny_tokenizer()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


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
def runs(tmp_path_factory, sample_path, tiny_clip) -> dict[tuple[str, str], Path]:
    """Tiny demo edits, with CLIP-T/CLIP-F by the tiny CLIP: (selection, codec) -> run folder."""
    folders = {}
    for name, codecs in RUNS.items():
        s = SELECTIONS[name]
        for codec in codecs:
            out = tmp_path_factory.mktemp(f"{name}_{codec}")
            args = [f"video.path={sample_path}", *SMALL, f"video.start={s['start']}", f"video.stride={s['stride']}"]
            args += [f"runtime.codec={codec}", f"runtime.output_dir={out}", "runtime.overwrite=true"]
            args += [f"eval.clip={tiny_clip}"]
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
@pytest.mark.slow
def test_eval_of_lossless_outputs_gives_the_runs_metrics_exactly(
    runs, sample_path, tiny_clip, tmp_path, capsys, name, codec
):
    """The original full clip with the run's selection and resize, or the run's own lossless
    source, against the lossless edited clip: the run's metrics.json numbers, to the last bit
    (CLIP-T/CLIP-F of eval.clip included, given the same model and the run's target prompt)."""
    run = runs[name, codec]
    metrics = json.loads((run / "metrics.json").read_text())
    clip_flags = ["--clip", str(tiny_clip), "--prompt", TARGET]
    from_original = eval_json(
        capsys,
        tmp_path,
        str(sample_path),
        str(run / EDITED[codec]),
        *selection_flags(name),
        "--source-resize",
        "center_crop",
        *clip_flags,
    )
    from_outputs = eval_json(capsys, tmp_path, str(run / SOURCE[codec]), str(run / EDITED[codec]), *clip_flags)
    assert metrics["target_prompt"] == TARGET and metrics["clip_model"] == str(tiny_clip)
    assert {"clip_t", "clip_f", "ssim_vs_source", "flicker_edited"} <= metrics["temporal_consistency"].keys()
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


# --- issue 33: SSIM, flicker, the unedited region (--mask), CLIP-T and CLIP-F (--clip, eval.clip) ---------------


def direct_clip_scores(folder: Path, pictures: np.ndarray, prompt: str) -> tuple[float, float]:
    """CLIP-T and CLIP-F computed straight with transformers: one batch of all the frames."""
    import transformers
    from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    pil = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    processor = CLIPProcessor(
        image_processor=AutoImageProcessor.from_pretrained(folder, **pil),
        tokenizer=CLIPTokenizer.from_pretrained(folder),
    )
    model = CLIPModel.from_pretrained(folder).eval()
    inputs = processor(text=[prompt], images=list(pictures), return_tensors="pt")
    with torch.no_grad():
        images, text = (
            model.get_image_features(pixel_values=inputs["pixel_values"]),
            model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]),
        )
    images, text = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (images, text))
    images = torch.nn.functional.normalize(images.double(), dim=-1)
    text = torch.nn.functional.normalize(text.double(), dim=-1)[0]
    return float(100 * (images @ text).mean()), float(100 * (images[1:] * images[:-1]).sum(-1).mean())


def test_clip_t_and_clip_f_are_transformers_cosines_x100_over_any_chunks(tiny_clip):
    from vidinv.clip_metrics import ClipScores
    from vidinv.io.video import frames_to_uint8
    from vidinv.metrics import ClipComparison

    source = clip(frames=5)
    edited = source.flip(-1) * 0.8
    whole = compare_clips(source, edited, clip=ClipScores.load(str(tiny_clip), TARGET))
    clip_t, clip_f = direct_clip_scores(tiny_clip, frames_to_uint8(edited), TARGET)
    assert abs(whole["clip_t"] - clip_t) < 1e-6 and abs(whole["clip_f"] - clip_f) < 1e-6
    assert -100 <= whole["clip_t"] <= 100 and -100 <= whole["clip_f"] <= 100
    for chunk in (1, 3):
        streamed = ClipComparison(clip=ClipScores.load(str(tiny_clip), TARGET))
        for start in range(0, len(source), chunk):
            streamed.update(source[start : start + chunk], edited[start : start + chunk])
        assert streamed.result() == whole, chunk
    static = compare_clips(source[:3], edited[:1].expand(3, -1, -1, -1), clip=ClipScores.load(str(tiny_clip), None))
    assert static["clip_f"] == pytest.approx(100, abs=1e-9) and "clip_t" not in static  # no prompt: CLIP-F only


def test_the_unedited_region_and_every_metric_are_the_same_over_any_chunks():
    from vidinv.metrics import ClipComparison

    source = clip(frames=7, h=48, w=64)
    edited = source.clone()
    edited[:, :, 10:30, 20:50] = -edited[:, :, 10:30, 20:50]  # the edit: a box
    mask = np.zeros((7, 48, 64), dtype=bool)
    mask[:, 10:30, 20:50] = True
    whole = compare_clips(source, edited, mask=mask)
    assert whole["psnr_unedited_db"] == float("inf") and whole["ssim_unedited"] == 1.0
    assert whole["flicker_edited"] > 0 and whole["ssim_vs_source"] < 0.9
    for chunk in (1, 3):
        streamed = ClipComparison(mask=mask)
        for start in range(0, len(source), chunk):
            streamed.update(source[start : start + chunk], edited[start : start + chunk])
        assert streamed.result() == whole, chunk


def png_file(folder: Path, frame: torch.Tensor) -> Path:
    """One frame (3, H, W) as a single PNG file."""
    write_video(folder, frame[None], 8, format="png")
    return next(folder.iterdir())


def test_eval_with_a_mask_image_folder_or_video_compares_the_unedited_region(tmp_path, capsys):
    source = clip(frames=4)
    edited = source.clone()
    edited[:, :, 16:48, 24:72] = edited[:, :, 16:48, 24:72].flip(-1)  # the edit: inside the box only
    white = -torch.ones(4, 3, 64, 96)
    white[:, :, 16:48, 24:72] = 1  # white = edited
    write_video(tmp_path / "src", source, 8, format="png")
    write_video(tmp_path / "edited", edited, 8, format="png")
    masks = [
        write_video(tmp_path / "mask", white, 8, format="png"),  # a folder, one image per frame
        write_video(tmp_path / "mask.mkv", white, 8),  # a video (lossless)
        png_file(tmp_path / "one", white[0]),  # one image for every frame
    ]
    for mask in masks:
        metrics = eval_json(capsys, tmp_path, str(tmp_path / "src"), str(tmp_path / "edited"), "--mask", str(mask))
        assert metrics["psnr_unedited_db"] is None, mask  # untouched outside the mask: infinite, null in strict JSON
        assert metrics["ssim_unedited"] == 1.0 and metrics["unedited_fraction"] == 1 - (32 * 48) / (64 * 96)
        assert metrics["psnr_vs_source_db"] < 30 and metrics["ssim_vs_source"] < 1 and metrics["mask"] == str(mask)
    small = png_file(tmp_path / "small", white[0, :, :, :64])
    assert main(["eval", str(tmp_path / "src"), str(tmp_path / "edited"), "--mask", str(small)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "64x64" in err[0] and "96x64" in err[0], err


def test_eval_with_clip_reports_clip_t_and_clip_f_in_strict_json(tiny_clip, tmp_path, capsys):
    write_video(tmp_path / "a", clip(), 8, format="png")
    metrics = eval_json(
        capsys, tmp_path, str(tmp_path / "a"), str(tmp_path / "a"), "--clip", str(tiny_clip), "--prompt", TARGET
    )
    assert metrics["clip_model"] == str(tiny_clip) and metrics["prompt"] == TARGET
    assert -100 <= metrics["clip_t"] <= 100 and -100 <= metrics["clip_f"] <= 100
    assert metrics["ssim_vs_source"] == 1.0 and metrics["flicker_edited"] == metrics["flicker_source"] > 0
    json.loads((tmp_path / "eval.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


@pytest.mark.parametrize("model", ["missing-folder", "vidinv-test/no-clip-model"])
def test_a_missing_clip_model_is_one_line_with_exit_2_before_any_work(tmp_path, capsys, monkeypatch, model):
    """A folder that does not exist, or a hub id with the hub unreachable and nothing cached: one
    line in seconds (the hub probe of vidinv.models.hub, not the hub client's retries); a run with
    eval.clip stops the same way before it writes anything."""
    import time

    import huggingface_hub.constants

    from vidinv.models import hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: "the hub cannot be reached (test)")
    model = str(tmp_path / model) if model == "missing-folder" else model
    write_video(tmp_path / "a", clip(), 8, format="png")
    started = time.perf_counter()
    argv = ["eval", str(tmp_path / "a"), str(tmp_path / "a"), "--clip", model, "--prompt", "x"]
    assert main([*argv, "--json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clip" in err[0] and model in err[0], err
    out = tmp_path / "run"
    assert (
        main(
            ["--quiet", "edit", str(REPO / "configs" / "demo.yaml"), f"eval.clip={model}", f"runtime.output_dir={out}"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.clip" in err[0] and model in err[0], err
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "m.json").exists() and not out.exists()


def test_a_prompt_without_a_clip_model_is_one_line(tmp_path, capsys):
    write_video(tmp_path / "a", clip(), 8, format="png")
    assert main(["eval", str(tmp_path / "a"), str(tmp_path / "a"), "--prompt", TARGET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clip" in err[0], err
