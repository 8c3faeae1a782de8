"""`vidinv tune`: the proxy, the grid read from the methods' traits, steps within an equal budget of
frame-calls, the deterministic ranking, the outputs; on the tiny models: two runs rank alike, the
counted frame-calls keep to the budget, and the chosen config reproduces its PSNR through
`vidinv reconstruct`."""

from __future__ import annotations

import csv
import json
import math

import pytest
from PIL import Image

from tests.conftest import REPO
from vidinv.cli import build_parser, main
from vidinv.config import load_config
from vidinv.jobs.tune import (
    PSNR_CEILING,
    Candidate,
    Planner,
    csv_text,
    method_grid,
    proxy_for,
    rank,
    transform_choices,
    without_aliases,
    write_chart,
)
from vidinv.models.families import FAMILIES

DEMO = str(REPO / "configs" / "demo.yaml")
CLIP = f"video.path={REPO / 'samples' / 'bikes.mp4'}"
# 2 frames at 32x16 (latents 4x2: not square, FreeInv's transforms axis is auto alone); the
# config's own method (freeinv, 2 steps) sets the budget: 2 frames x 2 steps x (inversion +
# reconstruction) = 8 frame-calls
TUNE = ["--frames", "2", "--size", "32"]
OWN = ["inversion.steps=2", CLIP, "model.device=cpu"]


def demo(*overrides):
    return load_config(DEMO, [CLIP, *overrides])


# -- the proxy, the grid, the budget (no model) ---------------------------------------------------


def test_the_proxy_is_the_first_frames_at_a_lower_size_keeping_the_aspect():
    proxy = proxy_for(demo(), None, None)  # the clip is 320x136; half its width by default
    assert (proxy.frames, proxy.width, proxy.height) == (4, 160, 64)  # 136 / 2 = 68 -> a multiple of 16
    assert proxy.of == {"frames": 16, "height": 136, "width": 320}
    assert proxy.overrides() == {"video.num_frames": 4, "video.height": 64, "video.width": 160}
    square = proxy_for(demo("video.height=64", "video.width=64", "video.num_frames=3"), 8, 32)
    assert (square.frames, square.height, square.width) == (3, 32, 32)  # never more frames than configured
    whole = proxy_for(demo("video.height=64", "video.width=64"), 2, 500)  # no larger than the clip
    assert (whole.height, whole.width) == (64, 64)
    wan = proxy_for(load_config(str(REPO / "configs" / "tiny" / "wan_edit.yaml"), [CLIP]), None, 32)
    assert wan.frames == 5  # 1 + 4: the causal video VAE's frame count


def test_the_transforms_axis_holds_distinct_groups_only():
    assert transform_choices((4, 4)) == ["auto", "flips", "dihedral"]  # auto is rot90 on square latents
    assert transform_choices((2, 4)) == ["auto"]  # the shape-preserving group: flips' elements


def test_the_grid_comes_from_each_methods_traits():
    config = demo()
    assert method_grid(config, "ddim", (4, 4)) == [{"inversion.method": "ddim", "inversion.freeinv": False}]
    assert [g["inversion.transforms"] for g in method_grid(config, "freeinv", (4, 4))] == ["auto", "flips", "dihedral"]
    assert [g["inversion.transforms"] for g in method_grid(config, "mbdi", (2, 4))] == ["auto"]
    assert [g["edit.skip"] for g in method_grid(config, "ddpm_ef", (4, 4))] == [0, None]  # T_skip 0 and 36%
    rf = method_grid(config, "rf_solver", (2, 4))  # composes FreeInv: without, and with its transforms
    assert rf == [
        {"inversion.method": "rf_solver", "inversion.freeinv": False},
        {"inversion.method": "rf_solver", "inversion.freeinv": True, "inversion.transforms": "auto"},
    ]


@pytest.mark.parametrize(
    "settings",
    [
        {"inversion.method": "ddim", "inversion.freeinv": False},
        {"inversion.method": "mbdi", "inversion.freeinv": False, "inversion.transforms": "dihedral"},
        {"inversion.method": "ddpm_ef", "inversion.freeinv": False, "edit.skip": None},
        {"inversion.method": "ddpm_ef", "inversion.freeinv": False, "edit.skip": 0},
    ],
)
def test_steps_are_the_most_that_fit_the_budget(settings):
    planner = Planner(demo(), FAMILIES["sd1"], 4, (8, 8))
    for budget in (8, 100, 333, 4000):
        steps = planner.steps_within(settings, budget)
        if steps:
            assert planner.total(settings, steps) <= budget < planner.total(settings, steps + 1)
        else:
            assert planner.total(settings, 1) > budget
    # DDIM: 4 frames x steps x 2 stages; MBDI with the dihedral group evaluates 8 times a step
    assert planner.steps_within({"inversion.method": "ddim"}, 400) == 50
    assert planner.steps_within({"inversion.method": "mbdi", "inversion.transforms": "dihedral"}, 400) == 6


def test_ddim_on_a_flow_model_is_the_flow_step_and_is_tuned_once():
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    names = ["ddim", "freeinv", "mbdi", "flow", "rf_solver", "fireflow"]
    assert without_aliases(demo(), names, FlowMatchEulerDiscreteScheduler()) == names[1:]
    unet = ["ddim", "freeinv", "mbdi", "ddpm_ef"]
    assert without_aliases(demo(), unet, DDIMScheduler()) == unet


def candidate(name, psnr, calls, budget_share=1.0, error=None):
    c = Candidate(name, name.split()[0], {"inversion.steps": 2}, budget_share, {"inversion": calls})
    c.counted, c.error = {"inversion": calls}, error
    c.measured, c.seconds = {"psnr_db": psnr}, {"total": 0.5}
    return c


def test_the_ranking_rule():
    """PSNR rounded to 0.01 dB (equal above 8-bit rounding's own PSNR), then frame-calls, then name;
    a candidate over the budget or that failed is listed last, unranked."""
    cands = [
        candidate("b 30.004 dB", 30.004, 8),
        candidate("a 30.001 dB", 30.001, 8),  # equal to b at 0.01 dB: the name decides
        candidate("c 30 dB fewer calls", 30.0, 4),  # equal too: fewer calls first
        candidate("d exact", math.inf, 8),
        candidate("e 120 dB", 120.0, 4),  # above the ceiling: as good as exact, fewer calls
        candidate("f over budget", 99.0, 9),
        candidate("g failed", None, 4, error="boom"),
        candidate("h 31 dB", 31.0, 8),
    ]
    ranked = rank(cands, 8)
    assert [c.name for c in ranked] == [
        "e 120 dB",
        "d exact",
        "h 31 dB",
        "c 30 dB fewer calls",
        "a 30.001 dB",
        "b 30.004 dB",
        "f over budget",
        "g failed",
    ]
    assert [c.rank for c in ranked] == [1, 2, 3, 4, 5, 6, None, None]
    assert 58.9 < PSNR_CEILING < 59.0
    assert [c.name for c in rank(list(reversed(cands)), 8)] == [c.name for c in ranked]  # order-free


def test_the_table_and_the_chart(tmp_path):
    ranked = rank([candidate("ddim steps=2", 14.5, 8), candidate("ddpm_ef steps=1", math.inf, 8)], 8)
    rows = list(csv.DictReader(csv_text([c.row(8) for c in ranked]).splitlines()))
    assert [(r["rank"], r["name"], r["psnr_db"]) for r in rows] == [
        ("1", "ddpm_ef steps=1", "inf"),
        ("2", "ddim steps=2", "14.5"),
    ]
    write_chart(tmp_path / "tune.png", ranked, "title")
    with Image.open(tmp_path / "tune.png") as chart:
        assert chart.format == "PNG" and chart.size == (1200, 600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tune.png"]  # no partial file left


def test_the_flags_follow_the_overrides():
    args = build_parser().parse_args(
        ["tune", DEMO, "a=1", "b=2", "--frames", "2", "--budget", "9", "--methods", "ddim"]
    )
    assert (args.overrides, args.frames, args.size, args.budget, args.methods) == (["a=1", "b=2"], 2, None, 9, "ddim")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--frames", "0"], "vidinv: error: --frames: 0, expected an integer >= 1"),
        (["--size", "8"], "vidinv: error: --size: 8, expected a width in px >= 16"),
        (["--budget", "0"], "vidinv: error: --budget: 0, expected a number of frame-calls >= 1"),
        (
            ["--methods", "flow"],
            "vidinv: error: --methods: 'flow' does not run on tiny (it runs: ddim, freeinv, mbdi, ddpm_ef)",
        ),
        (["--methods", ","], "vidinv: error: --methods: expected inversion method names separated by commas"),
    ],
)
def test_bad_input_is_one_line_before_any_work(flags, message, tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", DEMO, CLIP, f"runtime.output_dir={out}", *flags]) == 2
    err = capsys.readouterr().err
    assert err == message + "\n"
    assert not out.exists()


# -- on the tiny models ---------------------------------------------------------------------------


def run_tune(out, *extra):
    assert main(["-q", "tune", DEMO, *OWN, f"runtime.output_dir={out}", *TUNE, *extra]) == 0
    return json.loads((out / "tune.json").read_text())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Two tunes of the same proxy (every method the tiny SD runs), in two folders."""
    root = tmp_path_factory.mktemp("tune")
    return [(root / name, run_tune(root / name)) for name in ("first", "second")]


@pytest.mark.slow
def test_two_runs_rank_alike(tuned):
    (out, first), (_, second) = tuned
    assert first["winner"] == second["winner"]
    names = [(c["rank"], c["name"], c["psnr_db"]) for c in first["candidates"]]
    assert names == [(c["rank"], c["name"], c["psnr_db"]) for c in second["candidates"]]
    assert (out / "tune.png").stat().st_size > 0 and (out / "tune.csv").is_file()
    assert not [p for p in out.iterdir() if ".partial" in p.name]
    # the proxy, the budget and what was not tried
    assert first["proxy"]["overrides"] == ["video.num_frames=2", "video.height=16", "video.width=32"]
    assert first["budget"] == {"frame_calls": 8, "from": "freeinv at 2 steps", "config_own": 8, "shares": [1.0, 0.5]}
    assert {u["name"] for u in first["unfit"]} >= {"mbdi transforms=auto"}  # 2 x 4 x 2 frame-calls a step
    assert first["not_tuned"] == {}  # FlowEdit's n_max: only for the models that run FlowEdit
    # the DDPM-EF reconstruction is exact (its noise maps hold the residual): above 8-bit rounding's PSNR
    assert first["candidates"][0]["method"] == "ddpm_ef" and first["candidates"][0]["psnr_db"] > PSNR_CEILING


@pytest.mark.slow
def test_every_candidate_keeps_to_the_budget_as_counted(tuned):
    _, report = tuned[0]
    budget = report["budget"]["frame_calls"]
    planner = Planner(load_config(DEMO, OWN), FAMILIES["sd1"], 2, (2, 4))
    methods = set()
    for c in report["candidates"]:
        calls = c["frame_calls"]
        assert calls["counted"] <= budget and calls["within_budget"]
        assert calls["counted"] == calls["planned"] and calls["counted_per_stage"] == calls["planned_per_stage"]
        grid = {k: v for k, v in c["settings"].items() if k != "inversion.steps"}
        if grid.get("edit.skip") is None or grid["edit.skip"] == 0:  # one step more passes its share
            assert planner.total(grid, c["steps"] + 1) > int(budget * c["budget_share"])
        methods.add(c["method"])
    assert methods == {"ddim", "freeinv", "ddpm_ef"}


def reconstruct_tuned(tuned_yaml, report, out, *extra):
    """`vidinv reconstruct` of a tuned config on tune's proxy: its metrics.json."""
    args = ["-q", "reconstruct", str(tuned_yaml), *report["proxy"]["overrides"], f"runtime.output_dir={out}", *extra]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_the_chosen_config_reproduces_its_psnr(tuned, tmp_path):
    out, report = tuned[0]
    tuned_yaml = out / "tuned.yaml"
    config = load_config(tuned_yaml)  # loadable as any config, as `vidinv edit` loads it
    winner = report["candidates"][0]
    assert report["winner"] == winner["name"] and report["tuned"] == winner["settings"]
    assert (config.inversion.method, config.inversion.steps) == (winner["method"], winner["steps"])
    assert config.runtime.output_dir == str(out / "tuned")
    assert (config.video.num_frames, config.video.height) == (16, None)  # the clip itself, not the proxy
    metrics = reconstruct_tuned(tuned_yaml, report, tmp_path / "winner")
    assert metrics["psnr_db"] == winner["psnr_db"]  # the same computation, measured alike: bit for bit
    assert metrics["frame_calls"] == winner["frame_calls"]["counted_per_stage"]
    # a candidate whose PSNR is the inversion's error, not float rounding: the best DDIM-family one
    other = next(c for c in report["candidates"] if c["method"] != "ddpm_ef")
    settings = [f"{k}={'null' if v is None else v}" for k, v in other["settings"].items()]
    metrics = reconstruct_tuned(tuned_yaml, report, tmp_path / "other", *settings)
    assert metrics["psnr_db"] < PSNR_CEILING
    assert metrics["psnr_db"] == other["psnr_db"]


@pytest.mark.slow
def test_a_budget_too_small_for_one_step_is_one_line(tmp_path, capsys):
    assert main(["-q", "tune", DEMO, *OWN, f"runtime.output_dir={tmp_path / 'out'}", *TUNE, "--budget", "1"]) == 2
    assert capsys.readouterr().err == (
        "vidinv: error: --budget: 1 frame-calls is less than one step of any method on the proxy\n"
    )


@pytest.mark.slow
def test_a_flow_model_counts_its_solvers_evaluations(tmp_path):
    """tiny SD3: RF-Solver evaluates twice a step, FireFlow once more than its steps; with and
    without FreeInv; FlowEdit's n_max is said not to be tuned."""
    out = tmp_path / "sd3"
    config = str(REPO / "configs" / "tiny" / "sd3_flowedit.yaml")
    argv = ["-q", "tune", config, CLIP, f"runtime.output_dir={out}", *TUNE, "--budget", "8"]
    assert main([*argv, "--methods", "rf_solver,fireflow"]) == 0
    report = json.loads((out / "tune.json").read_text())
    got = {(c["name"], c["frame_calls"]["counted"]) for c in report["candidates"]}
    # rf_solver: 2 frames x 2 evaluations x 1 step x 2 stages; fireflow: 2 frames x (1 + 1) x 2
    assert got == {
        ("rf_solver steps=1", 8),
        ("rf_solver freeinv transforms=auto steps=1", 8),
        ("fireflow steps=1", 8),
        ("fireflow freeinv transforms=auto steps=1", 8),
    }
    assert "bit for bit" in report["not_tuned"]["edit.flowedit"]
    assert load_config(out / "tuned.yaml").edit.method == "flowedit"
