"""The new video families' tiny models (Wan 2.2 TI2V-5B and A14B, HunyuanVideo, LTX-Video, CogVideoX)
behave as tiny Wan / SD3 do everywhere else: the edit command shows its step, window and VAE bars;
`vidinv edit`, the app's edit and a batch item of the same settings write byte-identical videos
(h264; a lossless codec rerun too) making the frame-calls `vidinv plan` predicts; the app offers the
model's methods; an inversion interrupted by Ctrl-C during a step, or at a window boundary (a real
SIGINT), resumes from its checkpoint to the bit-identical record (in memory and on disk); a batch grid
over `model.pretrained` gives each item its own model. (That each tiny config's plan predicts its run's
frame-calls is tests/test_tiny_configs.py's, over configs/tiny/.)"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import signal

import pytest
import torch
import yaml

from tests.conftest import REPO
from tests.test_inversion_resume import RECORDS, Interrupting, checkpoint_of, interrupted_inversion, values
from tests.test_reproducible import videos_md5
from vidinv.cli import main
from vidinv.config import load_config
from vidinv.planning import plan_run

SAMPLE = REPO / "samples" / "bikes.mp4"
# configs/tiny/ of the families added in issue 32 (each names its tiny model)
CONFIGS = ["wan22_edit.yaml", "wan22_a14b_edit.yaml", "hunyuan_edit.yaml", "ltx_edit.yaml", "cogvideox_edit.yaml"]
# every latent frame its own temporal window: the windows' bar shows, and all three routes run windowed
WINDOWS = ["runtime.window=1", "runtime.window_overlap=0"]


def settings(name: str, *overrides: str, windows: list[str] = WINDOWS):
    """configs/tiny/NAME on the sample (absolute: as the app and a batch give the clip), in `windows`."""
    return load_config(REPO / "configs" / "tiny" / name, [f"video.path={SAMPLE}", *windows, *overrides])


def bars(stderr: str) -> set[str]:
    """The descriptions of the tqdm bars on stderr that showed a percentage (a known total)."""
    return {desc.strip() for desc in re.findall(r"([a-z_+ ]+):\s+\d+%\|", stderr)}


@pytest.fixture(scope="module", params=CONFIGS)
def runs(request, tmp_path_factory):
    """One tiny config run by `vidinv edit` (progress on; its stderr kept) and as a one-item `vidinv batch`."""
    name, folder = request.param, tmp_path_factory.mktemp(request.param.removesuffix(".yaml"))
    config = settings(name)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        args = [f"video.path={SAMPLE}", *WINDOWS, f"runtime.output_dir={folder / 'cli'}"]
        assert main(["edit", str(REPO / "configs" / "tiny" / name), *args]) == 0
    manifest = {
        "base": str(REPO / "configs" / "tiny" / name),
        "overrides": WINDOWS,
        "clips": [str(SAMPLE)],
        "prompts": [{"source": config.inversion.source_prompt, "target": config.edit.target_prompt}],
        "output_dir": str(folder / "batch"),
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    assert main(["--quiet", "batch", str(folder / "manifest.yaml")]) == 0
    (item,) = (folder / "batch" / "items").iterdir()
    return {
        "name": name,
        "config": config,
        "stderr": stderr.getvalue(),
        "cli": folder / "cli",
        "metrics": json.loads((folder / "cli" / "metrics.json").read_text()),
        "item": item,
        "summary": json.loads((folder / "batch" / "summary.json").read_text()),
    }


@pytest.mark.slow
def test_the_edit_command_shows_its_inversion_edit_window_and_vae_bars_on_stderr(runs):
    config, calls = runs["config"], runs["metrics"]["frame_calls"]
    expected = {"windows", "vae decode + write", "flowedit" if config.edit.method == "flowedit" else "edit"}
    if calls["inversion"]:  # FlowEdit is inversion-free
        expected.add(f"{config.inversion.method} inversion")
    assert expected <= bars(runs["stderr"]), runs["stderr"]
    assert "read + vae encode:" in runs["stderr"]


@pytest.mark.slow
def test_a_batch_item_writes_the_edit_commands_bytes_and_the_planned_frame_calls(runs):
    (row,) = runs["summary"]["rows"]
    assert row["status"] == "done", row
    assert videos_md5(runs["item"]) == videos_md5(runs["cli"])  # edited, source, side-by-side
    planned = plan_run(runs["config"]).frame_calls
    assert {"inversion": row["frame_calls_inversion"], "edit": row["frame_calls_edit"]} == planned
    assert runs["metrics"]["frame_calls"] == planned


@pytest.mark.slow
def test_the_app_offers_the_models_methods_and_its_edit_writes_the_edit_commands_bytes(runs, tmp_path):
    """The app on the tiny config: its page's methods are the model's (`vidinv info`'s edit methods),
    and its /edit function, called with the page's defaults, writes what `vidinv edit` wrote."""
    pytest.importorskip("gradio", reason="the app needs pip install -e '.[app]'")
    from vidinv.app import build_app, supported_methods

    config = runs["config"]
    inversion, edit = supported_methods(config)
    assert config.inversion.method in inversion and config.edit.method in edit
    app = build_app(config, root=tmp_path)
    (run_edit,) = [fn.fn for fn in app.fns.values() if fn.api_name == "edit"]
    edited, _, metrics = run_edit(str(SAMPLE), config.inversion.source_prompt, config.edit.target_prompt)
    assert metrics["frame_calls"] == runs["metrics"]["frame_calls"]
    assert videos_md5(tmp_path / "run-0000") == videos_md5(runs["cli"]) and edited.endswith("edited.mp4")


@pytest.fixture(scope="module")
def tiny_model():
    """config -> (its tiny model, built once for the module, in the config's windows; the config's
    clip encoded by the model's VAE, as the edit command encodes it)."""
    from vidinv.editor import VideoEditor
    from vidinv.models import load_models

    build = functools.cache(lambda name: load_models(name, dtype="fp32", device="cpu"))

    def model_and_latents(config):
        editor = VideoEditor(config, models=build(config.model.pretrained))
        return editor.models, editor.encode(editor.read().frames)

    return model_and_latents


# (config, inversion method, denoiser calls before Ctrl-C: during step 3 of 4): each config's own
# method (FreeInv, one call a step), DDPM-EF's noise maps on CogVideoX, RF-Solver's two calls a step
RESUMES = [(name, "freeinv", 2) for name in CONFIGS] + [
    ("cogvideox_edit.yaml", "ddpm_ef", 2),
    ("hunyuan_edit.yaml", "rf_solver", 5),
]


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("name, method, calls", RESUMES)
def test_an_inversion_interrupted_during_a_step_resumes_to_the_bit_identical_record(
    tiny_model, tmp_path, monkeypatch, name, method, calls, record
):
    """Ctrl-C during the third of four inversion steps, on the clip's own VAE latents; the same run
    again resumes after step 2 and gives the uninterrupted record (latents, noise maps) bit for bit."""
    from vidinv.inversion import api

    whole_config = settings(name, f"inversion.method={method}", "runtime.checkpoint_seconds=null", windows=[])
    models, x0 = tiny_model(whole_config)
    whole, _ = api.invert_or_load(models, x0, whole_config, tmp_path / "whole")
    resume = [f"inversion.method={method}", "runtime.checkpoint_seconds=0", f"runtime.record={record}"]
    config = settings(name, *resume, windows=[])
    folder = tmp_path / "run" / "inversion"
    interrupted_inversion(models, x0, config, folder, monkeypatch, calls)
    assert checkpoint_of(folder, record).is_file()
    resumed, reused = api.invert_or_load(models, x0, config, folder)
    assert not reused and resumed.stats.resumed_from_step == 2
    assert resumed.on_disk == (record == "disk")
    assert torch.equal(values(resumed.latents), whole.latents)
    assert (whole.noise_maps is None) == (method != "ddpm_ef")
    if whole.noise_maps is not None:
        assert torch.equal(values(resumed.noise_maps), whole.noise_maps)
    assert not checkpoint_of(folder, record).exists()


class Pressing(Interrupting):
    """The real denoiser, with a first Ctrl-C (SIGINT) pressed as its call number `after + 1` starts:
    `vidinv.interrupts` defers it to the next window boundary inside that call."""

    def __call__(self, z, t):
        if self.seen == self.after:
            os.kill(os.getpid(), signal.SIGINT)
        self.seen += 1
        return self.denoiser(z, t)


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("name", CONFIGS)
def test_a_ctrl_c_stops_at_the_next_window_boundary_and_resumes_to_the_bit_identical_record(
    tiny_model, tmp_path, monkeypatch, name, record
):
    """In windows of one latent frame, a SIGINT as step 3 starts stops after its first window with a
    checkpoint; the same run again replays that window and gives the uninterrupted record bit for bit."""
    from vidinv.interrupts import Interrupted
    from vidinv.inversion import api

    whole_config = settings(name, "runtime.checkpoint_seconds=null")
    models, x0 = tiny_model(whole_config)
    whole, _ = api.invert_or_load(models, x0, whole_config, tmp_path / "whole")
    config = settings(name, "runtime.checkpoint_seconds=0", f"runtime.record={record}")
    folder = tmp_path / "run" / "inversion"
    with monkeypatch.context() as patch:
        for denoiser in (api.GuidedModel, api.FlowGuidedModel):
            real = denoiser.for_prompt
            patch.setattr(denoiser, "for_prompt", lambda *a, real=real, **k: Pressing(real(*a, **k), 2))
        with pytest.raises(Interrupted) as stop:
            api.invert_or_load(models, x0, config, folder)
    assert re.match(r"interrupted at inversion step 2 of 4; window 1 of \d+ of step 3 done;", str(stop.value))
    assert checkpoint_of(folder, record).is_file()
    resumed, _ = api.invert_or_load(models, x0, config, folder)
    assert resumed.stats.resumed_from_step == 2
    assert torch.equal(values(resumed.latents), values(whole.latents))


@pytest.mark.parametrize("name", ["ltx_edit.yaml", "cogvideox_edit.yaml"])  # one flow, one DDPM video model
@pytest.mark.slow
def test_the_edit_rerun_in_this_process_writes_byte_identical_lossless_videos(tmp_path, name):
    def edit(out):
        args = [f"video.path={SAMPLE}", "runtime.codec=png", f"runtime.output_dir={out}"]
        assert main(["--quiet", "edit", str(REPO / "configs" / "tiny" / name), *args]) == 0
        return videos_md5(out, "png")  # a folder of png frames a video

    assert edit(tmp_path / "a") == edit(tmp_path / "b")


def test_a_batch_grid_over_model_pretrained_gives_each_item_its_model_and_record_folder(tmp_path):
    """A manifest's `grid: {model.pretrained: [...]}` (the flow models, at the LTX config's 9 frames):
    each item is configured with its own model (not the base config's) and inverts into its own record."""
    from vidinv.batch.manifest import load_manifest
    from vidinv.batch.plan import plan_items

    models = [load_config(REPO / "configs" / "tiny" / name).model.pretrained for name in CONFIGS[:4]]  # flow
    manifest = {
        "base": str(REPO / "configs" / "tiny" / "ltx_edit.yaml"),  # 9 frames: 1 + 8k, and 1 + 4k
        "clips": [str(SAMPLE)],
        "prompts": [{"source": "a man riding a bike", "target": "a robot riding a bike"}],
        "grid": {"model.pretrained": models},
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    (group,) = plan_items(load_manifest(tmp_path / "manifest.yaml"))
    assert [item.config.model.pretrained for item in group] == models
    assert len({item.config.runtime.record_dir for item in group}) == len(models)
