"""`vidinv batch` on a benchmark folder in the FiVE-Bench layout: its edits become items (clip x
edit x method), its masks give the unedited region's metrics, and the report compares the methods
(report.csv / report_methods.csv / report.json, matplotlib charts in index.html); a rerun skips
every finished item."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO
from vidinv.batch.benchmark import load_benchmark
from vidinv.batch.compare import stats
from vidinv.batch.manifest import load_manifest
from vidinv.batch.plan import plan_items
from vidinv.cli import main
from vidinv.config import config_with, load_config
from vidinv.errors import VidinvError
from vidinv.io import read_video, write_video

SIZE = 32
TINY = ["video.num_frames=2", f"video.height={SIZE}", f"video.width={SIZE}", "inversion.steps=2"]
METHODS = ["pnp", "tokenflow"]
BIKES = "0001_bikes"  # a video file (videos/)
STREET = "0002_street"  # a folder of PNG frames (images/)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def to_pictures(frames) -> np.ndarray:
    return ((frames.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


def write_masks(folder: Path, frames: int, height: int, width: int) -> None:
    """One PNG per frame, white (edited) on a block that moves a pixel a frame."""
    folder.mkdir(parents=True)
    for i in range(frames):
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4 : height // 2, width // 4 + i : width // 2 + i] = 255
        Image.fromarray(mask).save(folder / f"{i + 1:05d}.png")


def write_benchmark(root: Path) -> Path:
    """A tiny benchmark in the FiVE-Bench layout: a clip cut from samples/bikes.mp4 as a video file,
    another as a folder of PNG frames, per-frame PNG masks of each, an edit-prompt JSON."""
    bikes = read_video(REPO / "samples" / "bikes.mp4", num_frames=3, decoder="pyav")
    write_video(root / "videos" / f"{BIKES}.mp4", bikes.frames, bikes.fps)  # vidinv's own writer
    street = read_video(REPO / "samples" / "bikes.mp4", start=10, num_frames=3, size=(48, 64), decoder="pyav")
    (root / "images" / STREET).mkdir(parents=True)
    for i, picture in enumerate(to_pictures(street.frames)):
        Image.fromarray(picture).save(root / "images" / STREET / f"{i + 1:05d}.png")
    write_masks(root / "bmasks" / BIKES, 3, *bikes.frames.shape[2:])
    write_masks(root / "bmasks" / STREET, 3, 48, 64)
    edits = [
        {
            "video_name": BIKES,
            "source_prompt": "a [man] riding a bike",
            "target_prompt": "a [robot] riding a bike",
            "editing_type_id": 1,
            "save_dir": "1_a robot riding a b",
        },
        {
            "video_name": STREET,
            "source_prompt": "a [grey] street",
            "target_prompt": "a [red] street",
            "editing_type_id": 3,
            "save_dir": "3_a red street",
            "multiple_choice_question": "What colour is the street? \na) grey \nb) red",
        },
    ]
    (root / "edit_prompt").mkdir()
    (root / "edit_prompt" / "edit1_FiVE.json").write_text(json.dumps(edits[:1]), encoding="utf-8")
    (root / "edit_prompt" / "edit3_FiVE.json").write_text(json.dumps(edits[1:]), encoding="utf-8")
    return root


def batch_args(folder: Path, out: Path) -> list[str]:
    base = f"base={REPO / 'configs' / 'demo.yaml'}"
    methods = f"methods=[{','.join(METHODS)}]"
    return ["--quiet", "batch", str(folder), base, methods, f"output_dir={out}", *TINY, "runtime.codec=ffv1"]


def strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = write_benchmark(tmp_path_factory.mktemp("five"))
    out = root.parent / "out"
    code = main(batch_args(root, out))
    return {"root": root, "out": out, "code": code, "summary": strict_json(out / "summary.json")}


@pytest.mark.slow
def test_each_edit_x_method_is_an_item_and_a_clip_is_inverted_once_for_its_methods(bench):
    assert bench["code"] == 0
    rows = bench["summary"]["rows"]
    assert [r["item"] for r in rows] == [
        f"0-{BIKES.replace('_', '-')}_e1_method-pnp",
        f"0-{BIKES.replace('_', '-')}_e1_method-tokenflow",
        f"1-{STREET.replace('_', '-')}_e3_method-pnp",
        f"1-{STREET.replace('_', '-')}_e3_method-tokenflow",
    ]
    assert {r["status"] for r in rows} == {"done"}
    assert [r["setup"] for r in rows] == ["freeinv+pnp", "freeinv+tokenflow"] * 2
    root = bench["root"].resolve()
    assert [r["clip"] for r in rows] == [str(root / "videos" / f"{BIKES}.mp4")] * 2 + [
        str(root / "images" / STREET)
    ] * 2
    assert [r["source_prompt"] for r in rows[::2]] == ["a man riding a bike", "a grey street"]  # [brackets] gone
    assert [r["target_prompt"] for r in rows[::2]] == ["a robot riding a bike", "a red street"]
    assert [r["benchmark"]["edit_type"] for r in rows] == ["1", "1", "3", "3"]
    assert sorted(r["frame_calls_inversion"] for r in rows) == [0, 0, 4, 4]  # one inversion per clip
    for row in rows:
        config = yaml.safe_load((bench["out"] / "items" / row["item"] / "config.yaml").read_text())
        assert config["eval"]["mask"] == str(root / "bmasks" / row["benchmark"]["video"])


@pytest.mark.slow
def test_the_mask_gives_the_unedited_regions_metrics_as_vidinv_eval_computes_them(bench):
    """metrics.json's masked PSNR/SSIM equal `compare_clips` of the clip, the lossless edit and the
    mask, each read with the item's frame selection and size."""
    from vidinv.jobs.evaluate import edited_region
    from vidinv.metrics import compare_clips

    for row in bench["summary"]["rows"]:
        metrics = strict_json(bench["out"] / "items" / row["item"] / "metrics.json")
        clip = metrics["temporal_consistency"]
        assert {"psnr_unedited_db", "ssim_unedited", "unedited_fraction"} <= clip.keys()
        assert 0 < clip["unedited_fraction"] < 1 and metrics["mask"] == row["benchmark"]["mask"]
        pick = dict(num_frames=2, size=(SIZE, SIZE), decoder="pyav")
        source = read_video(row["clip"], **pick).frames
        edited = read_video(bench["out"] / "items" / row["item"] / "edited.mkv", decoder="pyav").frames
        mask = edited_region(read_video(metrics["mask"], **pick).frames)
        expected = compare_clips(source, edited, mask=mask)
        for key in ("psnr_unedited_db", "ssim_unedited", "unedited_fraction", "warp_error_edited"):
            assert clip[key] == pytest.approx(expected[key], rel=1e-12), key
        per_frame = metrics["per_frame"]["warp_error_edited"]
        assert len(per_frame) == 1 and per_frame[0] == pytest.approx(clip["warp_error_edited"], rel=1e-12)


@pytest.mark.slow
def test_the_report_has_a_table_per_method_per_item_rows_csv_json_and_png_charts(bench):
    out = bench["out"]
    html = (out / "index.html").read_text(encoding="utf-8")
    report = strict_json(out / "report.json")
    charts = [report["charts"]["warp_error_per_frame"], *report["charts"]["metrics"].values()]
    assert "charts/warp_error_per_frame.png" in charts and "charts/psnr_unedited_db.png" in charts
    assert {"charts/seconds.png", "charts/peak_memory_mb.png", "charts/warp_error_edited.png"} <= set(charts)
    for chart in charts:
        assert f'src="{chart}"' in html
        data = (out / chart).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(out / chart) as image:
            image.verify()
    assert sorted(p.name for p in (out / "charts").iterdir()) == sorted(Path(c).name for c in charts)
    for method in ("freeinv+pnp", "freeinv+tokenflow"):
        assert method in html
    assert "psnr_unedited_db" in html and " ± " in html
    items = csv_rows(out / "report.csv")
    assert len(items) == 4 and [r["method"] for r in items] == ["freeinv+pnp", "freeinv+tokenflow"] * 2
    assert {"video", "edit_type", "seconds", "peak_memory_mb", "psnr_unedited_db", "warp_error_edited"} <= items[
        0
    ].keys()
    methods = csv_rows(out / "report_methods.csv")
    assert [r["method"] for r in methods] == ["freeinv+pnp", "freeinv+tokenflow"]
    assert {"ssim_unedited_mean", "ssim_unedited_std", "seconds_mean", "peak_memory_mb_std"} <= methods[0].keys()


@pytest.mark.slow
def test_the_reports_means_and_stds_are_those_of_the_items_metrics_json(bench):
    out, rows = bench["out"], bench["summary"]["rows"]
    report = strict_json(out / "report.json")
    assert report["methods"] == ["freeinv+pnp", "freeinv+tokenflow"]
    files = {r["item"]: strict_json(out / "items" / r["item"] / "metrics.json") for r in rows}
    for method in report["methods"]:
        mine = [files[r["item"]] for r in rows if r["setup"] == method]
        expected = {key: [m["temporal_consistency"][key] for m in mine] for key in mine[0]["temporal_consistency"]}
        expected["seconds"] = [m["seconds"]["total"] for m in mine]
        expected["peak_memory_mb"] = [max(m["peak_memory"].values()) for m in mine]
        assert report["metrics"] == list(expected)
        for key, values in expected.items():
            entry = report["table"][method]["metrics"][key]
            assert entry["n"] == 2
            assert entry["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-15), key
            assert entry["std"] == pytest.approx(np.std(values), rel=1e-9, abs=1e-15), key
    methods = csv_rows(out / "report_methods.csv")
    assert (
        float(methods[0]["warp_error_edited_mean"])
        == report["table"]["freeinv+pnp"]["metrics"]["warp_error_edited"]["mean"]
    )


@pytest.mark.slow
def test_a_rerun_skips_every_finished_item_and_writes_the_same_report(bench, capsys):
    before = strict_json(bench["out"] / "report.json")
    assert main(batch_args(bench["root"], bench["out"])) == 0
    assert "0 done, 4 skipped, 0 failed" in capsys.readouterr().out
    summary = strict_json(bench["out"] / "summary.json")
    assert {r["status"] for r in summary["rows"]} == {"skipped"}
    after = strict_json(bench["out"] / "report.json")
    assert after["table"] == before["table"]
    assert [r["status"] for r in after["rows"]] == ["skipped"] * 4


def test_the_layout_is_read_as_five_bench_lays_it_out(tmp_path):
    root = tmp_path / "five"
    (root / "edit_prompt").mkdir(parents=True)
    (root / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(root / "images" / "a" / "00001.jpg")
    (root / "videos").mkdir()
    (root / "videos" / "a.mp4").write_bytes(b"x")  # the frame folder wins: FiVE's evaluation reads images/
    (root / "videos" / "b.mp4").write_bytes(b"x")
    (root / "bmasks" / "a").mkdir(parents=True)
    entry = {"source_prompt": "a [cat]", "target_prompt": "a [dog]"}
    edits = [{**entry, "video_name": "a", "editing_type_id": 1}, {**entry, "video_name": "b", "editing_type_id": 2}]
    (root / "edit_prompt" / "edit10_FiVE.json").write_text(json.dumps(edits[1:]))
    (root / "edit_prompt" / "edit2_FiVE.json").write_text(json.dumps({"0": edits[0]}))  # an object of edits too
    bench = load_benchmark(root)
    assert [(e.video, e.prompt_file) for e in bench.edits] == [("a", "edit2_FiVE.json"), ("b", "edit10_FiVE.json")]
    a, b = bench.edits
    assert (a.clip, a.mask, b.clip, b.mask) == (
        root / "images" / "a",
        root / "bmasks" / "a",
        root / "videos" / "b.mp4",
        None,
    )
    assert (a.source_prompt, a.target_prompt, a.edit_type) == ("a cat", "a dog", "1")
    assert [e.video for e in load_benchmark(root, edit_types=[2]).edits] == ["b"]
    assert [e.video for e in load_benchmark(root, videos=["a"]).edits] == ["a"]
    with pytest.raises(VidinvError, match="'c' is in none of edit_prompt"):
        load_benchmark(root, videos=["c"])
    (root / "videos" / "b.mp4").unlink()
    with pytest.raises(VidinvError, match=r"edit10_FiVE.json\[0\]: no clip for video 'b'"):
        load_benchmark(root)


def test_methods_and_the_benchmark_are_manifest_keys_checked_before_anything_runs(tmp_path, capsys):
    root = write_benchmark(tmp_path / "five")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump({"benchmark": str(root), "methods": ["pnp", "ddpm_ef+pnp"], "grid": {"inversion.steps": [2, 3]}})
    )
    groups = plan_items(load_manifest(manifest, TINY[:3] + ["edit_types=[3]"]))
    (group,) = groups
    assert [i.name for i in group] == [
        "0-0002-street_e3_method-pnp_steps-2",
        "0-0002-street_e3_method-pnp_steps-3",
        "0-0002-street_e3_method-ddpm-ef-pnp_steps-2",
        "0-0002-street_e3_method-ddpm-ef-pnp_steps-3",
    ]
    assert [i.setup for i in group[:3]] == [
        "freeinv+pnp inversion.steps=2",
        "freeinv+pnp inversion.steps=3",
        "ddpm_ef+pnp inversion.steps=2",
    ]
    cases = [
        ({"benchmark": str(root), "clips": ["x.mp4"]}, "'clips' and 'benchmark' exclude each other"),
        (
            {
                "clips": [str(REPO / "samples" / "bikes.mp4")],
                "prompts": [{"source": "a", "target": "b"}],
                "videos": ["a"],
            },
            "'videos' selects a benchmark's edits",
        ),
        ({"benchmark": str(tmp_path)}, "no edit_prompt/*.json"),
        ({"benchmark": str(root), "methods": ["pnp", "warp"]}, "'edit.method' is 'warp'"),
        ({"benchmark": str(root), "methods": ["pnp"], "grid": {"edit.method": ["pnp"]}}, "also set by 'methods'"),
    ]
    for values, fragment in cases:
        manifest.write_text(yaml.safe_dump(values))
        assert main(["batch", str(manifest), f"output_dir={tmp_path / 'o'}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err
    assert main(["batch", str(tmp_path), f"output_dir={tmp_path / 'o'}"]) == 2  # a folder, not a benchmark
    assert "without edit_prompt/*.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_runs_mask_is_selected_and_sized_as_its_clip(tmp_path):
    from vidinv.jobs.evaluate import check_run_mask, read_run_mask
    from vidinv.jobs.streaming import stream_for

    root = write_benchmark(tmp_path / "five")
    base = load_config(REPO / "configs" / "demo.yaml")
    clip = root / "videos" / f"{BIKES}.mp4"
    config = config_with(
        base,
        {"video.path": str(clip), "video.start": 1, "video.num_frames": 2, "eval.mask": str(root / "bmasks" / BIKES)},
    )
    mask = read_run_mask(config, stream_for(config))
    expected = read_video(root / "bmasks" / BIKES, start=1, num_frames=2, decoder="pyav").frames
    assert mask.shape == (2, 136, 320) and np.array_equal(mask, expected[:, 0].numpy() > 0)
    sized = config_with(config, {"video.height": SIZE, "video.width": SIZE})
    assert read_run_mask(sized, stream_for(sized)).shape == (2, SIZE, SIZE)
    one = config_with(sized, {"eval.mask": str(root / "bmasks" / BIKES / "00001.png")})
    assert read_run_mask(one, stream_for(one)).shape == (1, SIZE, SIZE)
    check_run_mask(config, mask, 2)
    with pytest.raises(VidinvError, match="2 frames selected, the clip 3"):
        check_run_mask(config, mask, 3)
    missing = config_with(config, {"eval.mask": str(tmp_path / "nope")})
    with pytest.raises(VidinvError, match="does not exist"):
        read_run_mask(missing, stream_for(missing))


def test_method_statistics_count_only_finite_values():
    assert stats([1.0, 3.0, None, math.inf]) == {"mean": 2.0, "std": 1.0, "n": 2}
    assert stats([None]) == {"mean": None, "std": None, "n": 0}
