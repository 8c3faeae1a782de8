"""Second-order flow inversion (`inversion.method: rf_solver | fireflow`, vidinv/inversion/flow_solvers.py)
on tiny SD3 / Flux / Wan: parity with independent loops written from the papers' update equations on
the bare transformer, FreeInv's transform of a step on both of its evaluations, reconstruction error
below Euler's (`flow`) at equal steps and at equal model calls, planned frame-calls equal to the runs'
counters, refusals in one line (UNet models; `inversion.freeinv` with a method that ignores it)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from tests.flow_reference import bare_velocity
from vidinv import VideoEditor
from vidinv import transforms as tf
from vidinv.config import config_from_dict
from vidinv.errors import VidinvError
from vidinv.inversion import get_inversion_method, invert, reconstruct
from vidinv.inversion.api import ReconstructionStats
from vidinv.inversion.flow import FlowSampler, flow_table, record_sampler
from vidinv.inversion.flow_solvers import FireFlowSampler, RFSolverSampler
from vidinv.models import load_models
from vidinv.planning import plan_run

SOLVERS = ("rf_solver", "fireflow")
PROMPT = "a red car"


def flow_config(name: str, method: str, *, steps: int = 4, guidance: float = 1.0, **inversion):
    return config_from_dict(
        {
            "model": {"pretrained": name, "dtype": "fp32", "device": "cpu", "frame_attention": "none"},
            "inversion": {"method": method, "steps": steps, "source_prompt": PROMPT, "guidance_scale": guidance}
            | inversion,
            "runtime": {"unet_chunk": 0},
        }
    )


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux", "tiny-wan"])
def flow_models(request):
    return load_models(request.param, dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def sd3():
    return load_models("tiny-sd3", dtype="fp32", device="cpu")


def latents(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(frames, 16, 8, 8, generator=torch.Generator().manual_seed(seed))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --- the independent loops: the pipelines' own calls on the bare transformer, the papers' updates ---


def paper_solve(velocity, z, sigmas, levels, method: str):
    """The papers' steps from sigmas[levels[0]] through each level in turn (h = sigma_b - sigma_a):
    RF-Solver (arXiv 2411.04746) z + h v + h^2/2 (v_mid - v) / (h/2); FireFlow (arXiv 2412.07517)
    z + h v_mid with v the previous step's v_mid after the first step."""
    carried = None
    for a, b in zip(levels[:-1], levels[1:]):
        h = sigmas[b] - sigmas[a]
        v = carried if carried is not None else velocity(z, 1000 * sigmas[a])
        v_mid = velocity(z + (h / 2) * v, 1000 * (sigmas[a] + h / 2))
        if method == "fireflow":
            z, carried = z + h * v_mid, v_mid
        else:
            z = z + h * v + (h**2 / 2) * ((v_mid - v) / (h / 2))
    return z


@pytest.mark.parametrize("method", SOLVERS)
@torch.no_grad()
def test_inversion_and_reconstruction_equal_loops_written_from_the_papers_equations(flow_models, method):
    """fp32, CFG 3 (Flux: embedded guidance 3): the record's noise and the reconstruction from it
    equal the paper's loop on the bare transformer within 1e-5 relative (one frame; Wan: 3 latent frames)."""
    steps, guidance = 4, 3.0
    config = flow_config(flow_models.source, method, steps=steps, guidance=guidance)
    x0 = latents(3 if flow_models.family.name == "wan" else 1)
    record = invert(flow_models, x0, config)
    ours = reconstruct(flow_models, record, config)

    velocity, z0, back = bare_velocity(flow_models, x0, PROMPT, guidance)
    sigmas = flow_table(flow_models.scheduler, steps, tuple(x0.shape[-2:])).sigmas
    noise = paper_solve(velocity, z0, sigmas, list(range(steps, -1, -1)), method)
    regenerated = paper_solve(velocity, noise, sigmas, list(range(steps + 1)), method)
    assert relative(record.latents[0], back(noise)) < 1e-5
    assert relative(ours, back(regenerated)) < 1e-5
    assert record.sampler == method and record.latents.shape == (steps + 1, *x0.shape)  # flow's layout


@pytest.mark.parametrize("method", SOLVERS)
@torch.no_grad()
def test_freeinv_with_identity_transforms_is_the_plain_method_bit_for_bit(sd3, method):
    x0 = latents(2, seed=1)
    plain_config = flow_config("tiny-sd3", method, guidance=2.0)
    plain = invert(sd3, x0, plain_config)
    config = flow_config("tiny-sd3", method, guidance=2.0, freeinv=True, transforms="none")
    composed = invert(sd3, x0, config)
    assert composed.transforms == ["id"] * 4
    assert torch.equal(composed.latents, plain.latents)
    assert torch.equal(reconstruct(sd3, composed, config), reconstruct(sd3, plain, plain_config))


@pytest.mark.parametrize("method", SOLVERS)
def test_with_freeinv_the_schedule_is_freeinvs_and_flowedit_takes_it(method):
    """`inversion.freeinv: true` draws FreeInv's schedule (same group and seed as `freeinv`): the
    record's transforms and the per-step transforms an inversion-free edit (FlowEdit) reads."""
    config = flow_config("tiny-sd3", method, steps=6, freeinv=True, transforms="rot90", seed=3).inversion
    freeinv = get_inversion_method("freeinv")(config).step_transforms(6, (8, 8))
    assert get_inversion_method(method)(config).step_transforms(6, (8, 8)) == freeinv
    plain = flow_config("tiny-sd3", method, steps=6, transforms="rot90").inversion
    assert get_inversion_method(method)(plain).step_transforms(6, (8, 8)) == ["id"] * 6


@pytest.mark.parametrize("method", SOLVERS)
@torch.no_grad()
def test_a_steps_transform_applies_to_both_of_its_evaluations(sd3, method):
    """On the transformer's input: inversion step i's first evaluation sees f_i(z_{i+1}) and its
    midpoint evaluation f_i(z_{i+1} + h/2 v_a), v_a the first evaluation's velocity brought back by
    f_i^{-1} (FireFlow: the previous step's midpoint velocity, brought back by that step's transform)."""
    steps = 5
    config = flow_config("tiny-sd3", method, steps=steps, freeinv=True, transforms="rot90", seed=3)
    x0 = latents(2, seed=2)
    seen = []

    def hook(module, args, kwargs, output):
        seen.append((kwargs["hidden_states"].clone(), output[0].clone()))

    handle = sd3.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        record = invert(sd3, x0, config)
    finally:
        handle.remove()
    schedule, sigmas = record.transforms, flow_table(sd3.scheduler, steps).sigmas
    assert len(set(schedule) - {"id"}) >= 2  # several orientations, not the identity alone
    assert len(seen) == (2 * steps if method == "rf_solver" else steps + 1)
    calls, carried = iter(seen), None
    for i in reversed(range(steps)):  # the inversion climbs from x0 (step N-1) to z_T (step 0)
        f, z = schedule[i], record.latents[i + 1]
        if carried is None:
            first_in, first_out = next(calls)
            assert torch.equal(first_in, tf.apply(f, z))
            v_a = tf.invert(f, first_out)
        else:
            v_a = carried
        mid_in, mid_out = next(calls)
        z_mid = z + ((sigmas[i] - sigmas[i + 1]) / 2) * v_a
        torch.testing.assert_close(tf.invert(f, mid_in), z_mid, rtol=0, atol=1e-6)
        carried = tf.invert(f, mid_out) if method == "fireflow" else None


@pytest.mark.parametrize("method", SOLVERS)
@torch.no_grad()
def test_reconstruction_error_is_below_eulers_at_equal_steps_and_at_equal_calls(sd3, method):
    """tiny SD3, 2 frames, guidance 1: ||reconstruction - x0|| / ||x0|| at 8 steps below flow's at 8
    steps, and with the model calls of 8 Euler steps (rf_solver: 4 steps, fireflow: 7) below it too."""
    x0 = latents(2, seed=5)

    def error(name: str, steps: int) -> float:
        config = flow_config("tiny-sd3", name, steps=steps)
        return relative(reconstruct(sd3, invert(sd3, x0, config), config), x0)

    euler = error("flow", 8)
    equal_calls = 4 if method == "rf_solver" else 7
    assert error(method, 8) < euler / 4
    assert error(method, equal_calls) < euler / 2


@pytest.mark.parametrize(
    ("name", "method"), [("tiny-sd3", "rf_solver"), ("tiny-sd3", "fireflow"), ("tiny-wan", "fireflow")]
)
def test_planned_frame_calls_equal_the_runs_counts(name, method):
    """`vidinv plan`'s inversion and reconstruction frame-calls (2 x steps per row for rf_solver,
    steps + 1 for fireflow) equal the counters of the runs; SD3 with CFG (2 rows) and FreeInv."""
    frames, size = (9, 64) if name == "tiny-wan" else (3, 64)
    values = {
        "model": {"pretrained": name, "dtype": "fp32", "device": "cpu"},
        "video": {"num_frames": frames, "height": size, "width": size},
        "inversion": {"method": method, "steps": 3, "source_prompt": PROMPT, "guidance_scale": 2.0, "freeinv": True},
        "edit": {"method": "flowedit" if name == "tiny-wan" else "pnp", "target_prompt": "a blue bus"},
    }
    editor = VideoEditor(values, models=load_models(name, dtype="fp32", device="cpu"))
    clip = torch.rand(frames, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    record, _ = editor.invert(clip)
    stats = ReconstructionStats()
    reconstruct(editor.models, record, editor.config, stats=stats)
    planned = plan_run(config_from_dict(values), "reconstruct").frame_calls
    latent_frames = 3 if name == "tiny-wan" else frames
    per_row = 2 * 3 if method == "rf_solver" else 3 + 1
    assert planned == {"inversion": record.stats.frame_calls, "reconstruction": stats.frame_calls}
    assert record.stats.frame_calls == latent_frames * 2 * per_row


def test_a_pnp_edit_reads_an_rf_solver_record_and_its_calls_are_planned(sd3):
    """The record keeps flow's layout: PnP edits from it (its branch loop steps the grid with one
    evaluation per step), and `vidinv plan` predicts both stages' frame-calls."""
    values = {
        "model": {"pretrained": "tiny-sd3", "dtype": "fp32", "device": "cpu"},
        "video": {"num_frames": 2, "height": 64, "width": 64},
        "inversion": {"method": "rf_solver", "steps": 4, "source_prompt": PROMPT, "guidance_scale": 2.0},
        "edit": {"method": "pnp", "target_prompt": "a blue bus", "guidance_scale": 3.0},
    }
    clip = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = VideoEditor(values, models=sd3).edit(clip)
    assert out.record.sampler == "rf_solver" and torch.isfinite(out.latents).all()
    planned = plan_run(config_from_dict(values)).frame_calls
    assert planned == {"inversion": out.record.stats.frame_calls, "edit": out.stats.frame_calls}


# --- the step rule alone (analytic velocity fields, no transformer) ---


def field(z, t):
    """A smooth nonlinear velocity acting on each latent value alone."""
    s = torch.as_tensor(t, dtype=z.dtype) / 1000
    return torch.sin(3 * s) * z - 0.2 * torch.tanh(z) + s


@pytest.mark.parametrize("sampler", [RFSolverSampler, FireFlowSampler])
def test_the_step_rule_does_not_depend_on_how_many_frames_a_call_holds(sampler):
    table = flow_table(FlowMatchEulerDiscreteScheduler(shift=3.0), 6)
    clip = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    whole = sampler(table).invert(field, clip)["latents"]
    for f in range(5):
        assert torch.equal(sampler(table).invert(field, clip[f : f + 1])["latents"][:, 0], whole[:, f])
    assert torch.equal(sampler(table).sample(field, whole[0, 1:3]), sampler(table).sample(field, whole[0])[1:3])


def double_table(steps: int):
    table = flow_table(FlowMatchEulerDiscreteScheduler(shift=3.0), steps)
    return type(table)(table.timesteps.double(), table.sigmas.double(), table.num_train_timesteps)


def test_observed_orders_on_a_smooth_field_are_the_rules_own():
    """fp64, an analytic field, 32 -> 64 steps: sampling alone (against a 4096-step solution) falls
    ~2x per doubling for Euler and ~4x for RF-Solver and FireFlow (orders 1 and 2); the round trip
    (inversion, then reconstruction) keeps Euler's order 1 and gains one for RF-Solver (order 3: the
    leading h^3 local errors of the way up and the way down cancel) and about one for FireFlow."""
    import math

    z = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    exact = RFSolverSampler(double_table(4096)).sample(field, z)

    def orders(sampler) -> tuple[float, float]:
        one_way, round_trip = [], []
        for steps in (32, 64):
            rule = sampler(double_table(steps))
            one_way.append(relative(rule.sample(field, z), exact))
            round_trip.append(relative(rule.sample(field, rule.invert(field, z)["latents"][0]), z))
        return math.log2(one_way[0] / one_way[1]), math.log2(round_trip[0] / round_trip[1])

    (euler, euler_trip), (rf, rf_trip), (ff, ff_trip) = map(orders, (FlowSampler, RFSolverSampler, FireFlowSampler))
    assert 0.9 < euler < 1.1 and 0.9 < euler_trip < 1.1
    assert 1.9 < rf < 2.2 and 1.9 < ff < 2.2
    assert 2.9 < rf_trip < 3.2 and 2.5 < ff_trip < 3.2


@pytest.mark.parametrize("record", ["memory", "disk"])
@pytest.mark.parametrize("method", ["rf_solver", "fireflow"])
def test_an_interrupted_inversion_resumes_to_the_bit_identical_record(sd3, tmp_path, monkeypatch, method, record):
    """Ctrl-C during a step, then the same run again: it resumes from the checkpoint (FireFlow's carried
    velocity saved beside the latents, in memory and with the record on disk) and gives the
    uninterrupted record bit for bit."""
    from tests.test_inversion_resume import checkpoint_of, interrupted_inversion, values
    from vidinv.config import config_with
    from vidinv.inversion import api

    x0 = latents(3, seed=5)
    base = config_with(flow_config("tiny-sd3", method, steps=6), {"model.device": "cpu"})
    whole, _ = api.invert_or_load(sd3, x0, config_with(base, {"runtime.checkpoint_seconds": None}), tmp_path / "whole")
    cfg = config_with(base, {"runtime.checkpoint_seconds": 0.0, "runtime.record": record})
    folder = tmp_path / "run" / "inversion"
    calls = {"rf_solver": 7, "fireflow": 4}[method]  # Ctrl-C during the 4th step (2 calls a step / 1 + 1 a step)
    interrupted_inversion(sd3, x0, cfg, folder, monkeypatch, calls)
    assert checkpoint_of(folder, record).is_file()
    resumed, reused = api.invert_or_load(sd3, x0, cfg, folder)
    assert not reused and resumed.stats.resumed_from_step == 3
    assert torch.equal(values(resumed.latents), whole.latents)


# --- refusals ---


@pytest.mark.parametrize("method", SOLVERS)
def test_unet_models_are_refused_in_one_line(method):
    with pytest.raises(VidinvError, match=f"inversion.method: {method} needs a flow-matching model") as caught:
        record_sampler(get_inversion_method(method)(flow_config("tiny-sd3", method).inversion), DDIMScheduler())
    assert "\n" not in str(caught.value)
    editor = VideoEditor.from_pretrained("tiny", inversion={"method": method, "steps": 2})
    with pytest.raises(VidinvError, match=f"inversion.method: {method} needs a flow-matching model"):
        editor.invert_latents(torch.zeros(1, 4, 8, 8))


def test_freeinv_with_a_method_that_ignores_it_is_refused_in_one_line():
    with pytest.raises(VidinvError, match="inversion.freeinv") as caught:
        flow_config("tiny-sd3", "flow", freeinv=True)
    assert "\n" not in str(caught.value)
    assert flow_config("tiny-sd3", "fireflow", freeinv=True).inversion.freeinv


def test_the_benchmark_script_runs_and_writes_its_tables(tmp_path, monkeypatch, capsys):
    """scripts/bench_second_order.py on its smallest arguments: rows for each method and step count,
    the equal-call comparison and the observed orders in the JSON."""
    import importlib.util
    import json

    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # it imports benchlib as a sibling
    spec = importlib.util.spec_from_file_location("bench_second_order", REPO / "scripts" / "bench_second_order.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    threads = torch.get_num_threads()
    out = tmp_path / "second_order.json"
    try:
        script.main(["--models", "tiny-sd3", "field", "--frames", "1", "--steps", "2", "4", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert {(r["model"], r["method"], r["steps"]) for r in record["rows"]} >= {
        (m, method, s) for m in ("tiny-sd3", "field") for method in ("flow", "rf_solver", "fireflow") for s in (2, 4)
    }
    assert [r["rf_solver_steps"] for r in record["equal_calls"]] == [1, 2, 1, 2]
    assert len(record["orders"]) == 6 and "observed order" in capsys.readouterr().out
