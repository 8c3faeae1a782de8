"""Long clips on a video transformer through overlapping temporal windows (`runtime.window`,
`runtime.window_overlap`; vidinv/attention/windows.py) on tiny Wan: the ramps, one window equal to the
unwindowed run bit for bit (flow, FreeInv, MBDI, RF-Solver inversion, FlowEdit), planned frame-calls
equal to the counted ones, bad settings refused in one line before loading, interrupts at window
boundaries resumed bit for bit, the transformer's activations bounded by the window."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from vidinv.attention.windows import Windows, default_overlap, resolve_windows
from vidinv.cli import main
from vidinv.config import config_from_dict, load_config
from vidinv.editor import VideoEditor
from vidinv.errors import VidinvError
from vidinv.inversion import reconstruct
from vidinv.models import load_models
from vidinv.models.families import FAMILIES

PROMPT = "a man riding a bike"
SEED = 0  # FreeInv's schedule: its last step (the inversion's first) is not the identity


@pytest.fixture(scope="module")
def wan():
    return load_models("tiny-wan", dtype="fp32", device="cpu")


def wan_config(method="freeinv", steps=3, window=None, overlap=1, **sections):
    runtime = {"window": window, "window_overlap": overlap, **sections.pop("runtime", {})}
    return config_from_dict(
        {
            "model": {"pretrained": "tiny-wan", "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
            "inversion": {"method": method, "steps": steps, "source_prompt": PROMPT, "guidance_scale": 2.0},
            "edit": {"method": "flowedit", "target_prompt": "a robot riding a bike", "seed": 3},
            "runtime": runtime,
            **sections,
        }
    )


def latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, 16, 8, 12, generator=torch.Generator().manual_seed(seed))


def editor(models, config) -> VideoEditor:
    return VideoEditor(config, models=models)  # the editor applies the config's windows to the models


# --- the windows and their ramps ---


@pytest.mark.parametrize(
    "size, overlap, frames", [(5, 1, 9), (5, 2, 11), (21, 6, 81), (4, 3, 10), (3, 0, 9), (7, 3, 7)]
)
def test_ramp_weights_sum_to_one_on_every_latent_frame_and_are_symmetric(size, overlap, frames):
    windows = Windows(size, overlap)
    spans, weights = windows.slices(frames), windows.weights(frames)
    assert spans[0].start == 0 and spans[-1].stop == frames and len(spans) == windows.count(frames)
    assert all(s.stop - s.start == min(size, frames) for s in spans)
    total = torch.zeros(frames, dtype=torch.float64)
    for span, weight in zip(spans, weights):
        assert weight.dtype == torch.float32 and (weight > 0).all()
        total[span] += weight.double()
    torch.testing.assert_close(total, torch.ones(frames, dtype=torch.float64), rtol=0, atol=1e-6)
    for weight, mirrored in zip(weights, reversed(weights)):  # the clip reversed: the same ramps
        assert torch.equal(weight, mirrored.flip(0))
    if len(spans) > 1 and overlap:  # a linear ramp across the shared frames
        shared = weights[0][-overlap:]
        assert torch.all(shared[1:] < shared[:-1])
    assert windows.frame_calls(frames) == sum(s.stop - s.start for s in spans)  # overlaps counted twice


def test_a_clip_that_is_not_whole_windows_is_a_one_line_error_naming_valid_settings():
    with pytest.raises(VidinvError) as err:
        Windows(21, 6).check(33)
    assert str(err.value) == (
        "runtime.window: 129 frames (33 latent frames) are not whole windows of 21 latent frames overlapping by 6"
        " (stride 15): use video.num_frames 81 or 141, or runtime.window_overlap 9 or 15"
    )
    for frames in (81, 141, 201, 321):  # 21 + 15 m latent frames
        Windows(21, 6).check(1 + (frames - 1) // 4)
    Windows(21, 6).check(20)  # shorter than a window: one window


def test_frame_models_ignore_runtime_window_with_a_note(caplog):
    runtime = wan_config(window=5).runtime
    with caplog.at_level("WARNING", logger="vidinv"):
        assert resolve_windows(FAMILIES["sd3"], runtime) is None
    assert "runtime.window=5 is not applied: SD3 is a frame model" in caplog.text
    assert resolve_windows(FAMILIES["wan"], wan_config().runtime) == Windows(21, 1)  # null: Wan's native 21
    assert resolve_windows(FAMILIES["wan"], wan_config(overlap=None).runtime) == Windows(21, 5)  # null: a quarter
    assert [default_overlap(n) for n in (1, 2, 3, 5, 6, 21)] == [0, 1, 1, 1, 2, 5]
    assert resolve_windows(FAMILIES["wan"], wan_config(window=0).runtime) is None  # 0: the whole clip at once
    with pytest.raises(VidinvError, match=r"runtime.window_overlap: 21 must be in 0..20") as err:
        resolve_windows(FAMILIES["wan"], wan_config(overlap=21).runtime)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_runtime_window_on_a_frame_model_changes_nothing():
    sd3 = load_models("tiny-sd3", dtype="fp32", device="cpu")
    base = {"model": {"pretrained": "tiny-sd3", "dtype": "fp32", "device": "cpu", "frame_attention": "none"}}
    base["inversion"] = {"method": "flow", "steps": 2, "source_prompt": PROMPT}
    x0 = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    plain, _ = VideoEditor(base, models=sd3).invert_latents(x0)
    windowed, _ = VideoEditor({**base, "runtime": {"window": 1}}, models=sd3).invert_latents(x0)
    assert getattr(sd3, "windows", None) is None and torch.equal(plain.latents, windowed.latents)


# --- one window is the unwindowed run, bit for bit ---


@pytest.mark.parametrize("method", ["flow", "freeinv", "mbdi", "rf_solver"])
def test_one_window_covering_the_clip_inverts_and_reconstructs_exactly_as_without_windows(wan, method):
    x0 = latents(5)
    plain = editor(wan, wan_config(method, window=0))
    record, _ = plain.invert_latents(x0)
    assert wan.windows is None
    for window, overlap in ((5, 1), (21, 6), (None, 6)):  # a window as long as the clip, or longer
        covered = editor(wan, wan_config(method, window=window, overlap=overlap))
        same, _ = covered.invert_latents(x0)
        assert wan.windows is not None and wan.windows.count(5) == 1
        assert torch.equal(same.latents, record.latents)
        assert same.fingerprint == record.fingerprint  # so a record is reused across both
        regenerated = reconstruct(covered.models, same, covered.config)
        assert torch.equal(regenerated, reconstruct(plain.models, record, plain.config))


def test_one_window_covering_the_clip_edits_with_flowedit_exactly_as_without_windows(wan):
    x_src = latents(5, seed=1)
    plain = editor(wan, wan_config(window=0)).edit_latents(x_src, "a robot riding a bike")
    covered = editor(wan, wan_config(window=5)).edit_latents(x_src, "a robot riding a bike")
    assert torch.equal(covered.latents, plain.latents)
    assert covered.stats.frame_calls == plain.stats.frame_calls


def test_windows_shorter_than_the_clip_run_window_by_window_and_count_every_window(wan):
    x0 = latents(9, seed=2)
    whole, _ = editor(wan, wan_config(window=0)).invert_latents(x0)
    calls = []
    hook = wan.transformer.register_forward_pre_hook(
        lambda m, args, kw: calls.append(kw["hidden_states"].shape[2]), with_kwargs=True
    )
    try:
        windowed, _ = editor(wan, wan_config(window=5, overlap=1)).invert_latents(x0)
    finally:
        hook.remove()
    assert calls == [5, 5] * 3  # two windows of 5 latent frames at each of the 3 steps
    assert windowed.stats.frame_calls == 2 * 10 * 3  # 2 rows (CFG) x (5 + 5) latent frames x 3 steps
    assert windowed.fingerprint != whole.fingerprint
    assert torch.isfinite(windowed.latents).all() and not torch.equal(windowed.latents, whole.latents)
    torch.testing.assert_close(windowed.latents[-1], whole.latents[-1], rtol=0, atol=0)  # x0 itself
    out = editor(wan, wan_config(window=5, overlap=1)).edit_latents(x0, "a robot riding a bike")
    assert torch.isfinite(out.latents).all()


def test_freeinv_applies_the_step_transform_in_every_window(wan):
    """Each window's transformer input is the step's transform of that window's latents (spatial, per latent frame)."""
    from vidinv import transforms

    x0 = latents(9, seed=4)
    config = wan_config("freeinv", steps=3, window=5, overlap=1, inversion={"transforms": "flips", "seed": SEED})
    seen = []
    hook = wan.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["hidden_states"].clone()), with_kwargs=True
    )
    try:
        record, _ = editor(wan, config).invert_latents(x0)
    finally:
        hook.remove()
    first = record.transforms[-1]  # inversion step N-1 runs first, at the clean latents x0
    assert first != "id"
    expected = transforms.apply(first, x0[None])  # (1 f c h w)
    for k, span in enumerate(Windows(5, 1).slices(9)):
        window = seen[k][:1].permute(0, 2, 1, 3, 4)  # the first row's input, back to (1 f c h w)
        assert torch.equal(window, expected[:, span])


# --- the planner ---


@pytest.mark.slow
def test_a_windowed_edit_and_inversion_make_the_planned_frame_calls(wan, tmp_path, monkeypatch):
    from vidinv.planning import plan_run

    monkeypatch.chdir(os.path.dirname(os.path.dirname(__file__)))
    keys = ["video.num_frames=17", "runtime.window=3", "runtime.window_overlap=1", "inversion.steps=3"]
    for command, config in (("edit", "configs/tiny/wan_edit.yaml"), ("reconstruct", "configs/tiny/wan_edit.yaml")):
        out = tmp_path / command
        assert main(["-q", command, config, *keys, f"runtime.output_dir={out}"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        plan = plan_run(load_config(config, keys), command)
        assert metrics["frame_calls"] == plan.frame_calls and plan.windows == (2, 3, 1)
        assert plan.latent_frames == 5


@pytest.mark.slow
def test_the_plan_names_the_windows_and_bounds_the_transformer_by_the_window(capsys):
    from vidinv.planning import plan_run

    def plan(frames, window):
        keys = [f"video.num_frames={frames}", f"runtime.window={window}", "runtime.window_overlap=1"]
        return plan_run(load_config("configs/tiny/wan_edit.yaml", keys + ["video.height=256", "video.width=448"]))

    windowed = [plan(frames, 5) for frames in (33, 65, 129)]
    whole = [plan(frames, 0) for frames in (33, 65, 129)]
    assert [p.windows for p in windowed] == [(2, 5, 1), (4, 5, 1), (8, 5, 1)]
    # one window's activations, beside the clip's input and blended output of the 4 rows (source and
    # target, uncond and cond): growth per latent frame of 2 x 4 latent frames, none activation-sized
    latent_frame = 16 * (256 // 8) * (448 // 8) * 4
    slope = (windowed[-1].unet_activations - windowed[0].unet_activations) / (33 - 9)
    assert slope <= 2 * 4 * latent_frame * 1.01
    whole_slope = (whole[-1].unet_activations - whole[0].unet_activations) / (33 - 9)
    assert whole_slope > 1.5 * slope and windowed[-1].unet_activations < 0.7 * whole[-1].unet_activations
    assert [p.frame_calls["edit"] for p in windowed] == [p.frame_calls["edit"] * n // m for p, n, m in
                                                         zip(whole, (10, 20, 40), (9, 17, 33))]  # fmt: skip
    assert main(["plan", "configs/tiny/wan_edit.yaml", "video.num_frames=33", "runtime.window=5"]) == 0
    assert "temporal windows: 2 of 5 latent frames, overlapping by 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "keys, message",
    [
        (
            ["video.num_frames=33", "runtime.window=5", "runtime.window_overlap=2"],
            "vidinv: error: runtime.window: 33 frames (9 latent frames) are not whole windows of 5 latent frames"
            " overlapping by 2 (stride 3): use video.num_frames 29 or 41, or runtime.window_overlap 1 or 3",
        ),
        (
            ["runtime.window=4", "runtime.window_overlap=4"],
            "vidinv: error: config: 'runtime.window_overlap' is 4, expected null or an integer >= 0, below runtime.window (4)",
        ),
        (
            ["runtime.window_overlap=21"],
            "vidinv: error: runtime.window_overlap: 21 must be in 0..20, below the window of 21 latent frames"
            " (runtime.window: the model native length)",
        ),
    ],
)
def test_bad_window_settings_are_refused_in_one_line_before_loading(tmp_path, capsys, monkeypatch, keys, message):
    import vidinv.editor

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded")

    monkeypatch.setattr(vidinv.editor, "load_models_for", no_loading)
    monkeypatch.chdir(os.path.dirname(os.path.dirname(__file__)))
    args = ["edit", "configs/tiny/wan_edit.yaml", *keys, f"runtime.output_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == message


# --- interrupts and resume: a window boundary is a checkpoint boundary ---

RESUME_CALLS = {"flow": 2, "fireflow": 2, "mbdi": 8}  # transformer calls a step (2 windows; MBDI: 4 transforms)


class Transformer:
    """Counts the tiny Wan transformer's calls (one per window) and, at call number `at` (from 0),
    presses Ctrl-C once (`sigint`: the first one, taken at the next window boundary) or raises
    KeyboardInterrupt (a second Ctrl-C, a kill: the call is lost)."""

    def __init__(self, transformer, at: int | None = None, sigint: bool = True):
        self.transformer, self.at, self.sigint, self.calls = transformer, at, sigint, 0

    def __enter__(self):
        self.hook = self.transformer.register_forward_pre_hook(self.before)
        return self

    def __exit__(self, *exc):
        self.hook.remove()

    def before(self, module, args):
        if self.calls == self.at:
            if not self.sigint:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)  # vidinv.interrupts defers it to the window boundary
        self.calls += 1


def resume_config(method, record, checkpoint_seconds=0.0):
    return wan_config(
        method, steps=4, window=5, overlap=1, runtime={"checkpoint_seconds": checkpoint_seconds, "record": record}
    )


@pytest.mark.parametrize("record", ["memory", "disk"])
@pytest.mark.parametrize("method", ["flow", "fireflow", "mbdi"])
def test_a_ctrl_c_stops_at_the_next_window_boundary_and_the_run_resumes_to_the_bit_identical_record(
    wan, tmp_path, method, record
):
    from tests.test_inversion_resume import checkpoint_of, values
    from vidinv.interrupts import Interrupted
    from vidinv.inversion import api

    x0 = latents(9, seed=6)
    models = editor(wan, resume_config(method, record)).models
    with Transformer(wan.transformer) as counted:
        whole, _ = api.invert_or_load(models, x0, resume_config(method, record, None), tmp_path / "whole")
    total = counted.calls

    folder = tmp_path / "run" / "inversion"
    at = 2 * RESUME_CALLS[method] + (2 if method == "fireflow" else 0)  # the first window of step 3 (FireFlow: +1 call)
    with Transformer(wan.transformer, at=at) as pressed, pytest.raises(Interrupted) as stop:
        api.invert_or_load(models, x0, resume_config(method, record), folder)
    assert pressed.calls == at + 1  # stopped right after that window, mid-step
    assert str(stop.value).startswith("interrupted at inversion step 2 of 4; window 1 of 2 of step 3 done;")
    assert "checkpoint saved" in str(stop.value) and checkpoint_of(folder, record).is_file()

    with Transformer(wan.transformer) as resumed_calls:
        resumed, reused = api.invert_or_load(models, x0, resume_config(method, record), folder)
    assert not reused and resumed.stats.resumed_from_step == 2
    assert resumed_calls.calls == total - (at + 1)  # the window before the Ctrl-C is replayed, not run again
    assert torch.equal(values(resumed.latents), values(whole.latents))
    assert resumed.stats.frame_calls == whole.stats.frame_calls * resumed_calls.calls // total
    assert not checkpoint_of(folder, record).exists()


@pytest.mark.parametrize("record", ["memory", "disk"])
def test_a_run_killed_inside_a_window_resumes_from_the_last_window_boundary_bit_for_bit(wan, tmp_path, record):
    from tests.test_inversion_resume import checkpoint_of, values
    from vidinv.inversion import api

    x0 = latents(9, seed=7)
    models = editor(wan, resume_config("freeinv", record)).models
    whole, _ = api.invert_or_load(models, x0, resume_config("freeinv", record, None), tmp_path / "whole")
    folder = tmp_path / "run" / "inversion"
    for at in (1, 4):  # inside the second window of step 1, then (resumed: 1 + 2 + 1 calls later) of step 3
        with Transformer(wan.transformer, at=at, sigint=False), pytest.raises(KeyboardInterrupt):
            api.invert_or_load(models, x0, resume_config("freeinv", record), folder)
        assert checkpoint_of(folder, record).is_file()
    with Transformer(wan.transformer) as counted:
        resumed, _ = api.invert_or_load(models, x0, resume_config("freeinv", record), folder)
    assert resumed.stats.resumed_from_step == 2 and counted.calls == 3  # step 3's second window, step 4
    assert torch.equal(values(resumed.latents), values(whole.latents))


# --- the seams' benchmark ---


@pytest.mark.slow
def test_bench_seams_measures_border_and_interior_pairs_per_configuration(tmp_path, monkeypatch):
    import importlib.util

    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_seams", REPO / "scripts" / "bench_seams.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.pair_groups(17, Windows(3, 1)) == ([4, 8], [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15], [0, 12])
    out = tmp_path / "seams.json"
    threads = torch.get_num_threads()
    try:
        bench.main(
            ["--frames", "17", "--size", "64", "96", "--steps", "2", "--windows", "3:1", "0", "--json", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    whole, windowed = json.loads(out.read_text())["rows"]
    assert whole["window"] == "whole clip" and whole["border_pairs"] == 0
    assert windowed["window"] == "3:1" and windowed["windows"] == 2 and windowed["border_at"] == [4, 8]
    assert windowed["border"] > 0 and windowed["interior"] > 0 and windowed["border_unwindowed"] > 0


def test_gpu_check_has_wan_window_cases_at_480x832_for_81_and_321_frames(monkeypatch):
    import importlib.util

    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    args = check.parse_args(["--families", "wan", "--dry-run"])
    cases = [c for c in check.cases_for("wan", args) if c.kind == "window"]
    assert [c.name for c in cases] == ["wan/window-81f-480x832-2steps", "wan/window-321f-480x832-2steps"]
    for case in cases:
        keys = dict(key.split("=", 1) for key in case.overrides)
        assert (keys["video.height"], keys["video.width"], keys["runtime.window"]) == ("480", "832", "21")
        assert keys["runtime.window_overlap"] == "6" and keys["edit.flowedit.n_max"] == "2"
        assert sum(k.startswith("video.height=") for k in case.overrides) == 1
    assert not [c for c in check.cases_for("sd15", args) if c.kind == "window"]  # frame models: none
