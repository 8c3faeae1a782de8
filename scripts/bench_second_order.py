#!/usr/bin/env python
"""Benchmark second-order flow inversion (rf_solver, fireflow) against the Euler reversal (flow).

For each model and method: invert the clip's latents with the source prompt, regenerate from the
record with the same prompt and guidance, and measure the round trip's relative error
||reconstruction - x0|| / ||x0|| on the latents (no VAE decode: the inversion's own error), at each
step count (--steps) and at equal model calls: a budget of E evaluations per frame and prompt row is
E Euler steps, E / 2 RF-Solver steps (2 evaluations per step; even E only) or E - 1 FireFlow steps
(N + 1 evaluations for N steps). The observed order of convergence of each method is the slope of
log error against log steps (least squares over --steps, sign flipped: 1 = halving the step halves
the error), and the local one between the two largest step counts.

    python scripts/bench_second_order.py                                   # tiny SD3 and tiny Wan, CPU
    python scripts/bench_second_order.py --models tiny-sd3 --steps 4 8 16 50 --guidance 3
    python scripts/bench_second_order.py --models tiny-hunyuan --steps 4 16 50 --methods flow freeinv rf_solver fireflow
    python scripts/bench_second_order.py --models tiny-ltx --steps 4 16 50 --methods flow freeinv rf_solver fireflow

--methods adds inversion methods that step with the Euler rule (freeinv, mbdi: one evaluation a step,
regenerated with the record's transforms) beside the step rules; the analytic field runs the step
rules only.

`field` (a model name) is an analytic smooth velocity field in fp64 (the same grid as SD3's,
shift 3): the rules' textbook orders without a network (RF-Solver's round trip gains one order:
the leading h^3 local errors of the way up and the way down cancel). The tiny models have random
weights: their velocity changes fast with the timestep (sinusoidal embeddings of t in 0..1000), so
few steps are far from the asymptotic regime and their observed orders are lower.

Prints a table per model and writes JSON (default bench_results/second_order.json): the rows
(model, method, steps, evaluations per frame and row, frame-calls of both stages, error, seconds),
`equal_calls` and `orders`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import benchlib
import torch

REPO = benchlib.REPO

METHODS = ("flow", "rf_solver", "fireflow")
FIELD = "field"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["tiny-sd3", "tiny-wan", FIELD])
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="step rules and Euler-step methods")
    p.add_argument("--video", default=str(REPO / "samples" / "bikes.mp4"))
    p.add_argument("--frames", type=int, default=9, help="video frames (Wan: 1 + 4k; 9 = 3 latent frames)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 50])
    p.add_argument("--guidance", type=float, default=1.0, help="inversion.guidance_scale (CFG on SD3 / Wan)")
    p.add_argument("--prompt", default="a man riding a bike")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", default=str(REPO / "bench_results" / "second_order.json"))
    return p.parse_args(argv)


def equal_call_steps(method: str, budget: int) -> int | None:
    """Steps of `method` that make `budget` evaluations per frame and row (None: no whole number)."""
    if method == "rf_solver":
        return budget // 2 if budget % 2 == 0 else None
    if method == "fireflow":
        return budget - 1 if budget > 1 else None
    return budget


def order(steps: list[int], errors: list[float]) -> float | None:
    """-slope of log error against log steps (least squares)."""
    pairs = [(math.log(s), math.log(e)) for s, e in zip(steps, errors) if e > 0]
    if len(pairs) < 2:
        return None
    mx, my = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    return -sum((x - mx) * (y - my) for x, y in pairs) / sxx


class ModelRunner:
    """Invert + reconstruct a vidinv model's clip latents with a method and a step count."""

    def __init__(self, name: str, args):
        from vidinv.config import config_from_dict
        from vidinv.jobs.common import load_clip
        from vidinv.models import encode_frames, load_models

        self.name, self.args = name, args
        self.values = {
            "model": {"pretrained": name, "dtype": "fp32", "device": args.device, "frame_attention": "none"},
            "video": {"path": args.video, "num_frames": args.frames, "height": args.height, "width": args.width},
            "inversion": {"source_prompt": args.prompt, "guidance_scale": args.guidance},
            "runtime": {"unet_chunk": 0},
        }
        config = config_from_dict(self.values)
        self.models = load_models(name, dtype="fp32", device=args.device)
        with torch.no_grad():
            self.x0 = encode_frames(self.models.vae, load_clip(config).frames, config.runtime.vae_chunk)
        self.describe = f"{name}: latents {list(self.x0.shape)}, guidance {args.guidance}, fp32 {args.device}"

    def takes(self, method: str) -> bool:
        return True

    def run(self, method: str, steps: int) -> dict:
        from vidinv.config import config_from_dict
        from vidinv.inversion import api

        values = self.values | {"inversion": self.values["inversion"] | {"method": method, "steps": steps}}
        config = config_from_dict(values)
        stats = api.ReconstructionStats()
        start = time.perf_counter()
        record = api.invert(self.models, self.x0, config)
        recon = api.reconstruct(self.models, record, config, stats=stats)
        benchlib.synchronize(self.models.device)
        seconds = time.perf_counter() - start
        error = float((recon.float().cpu() - self.x0.float().cpu()).norm() / self.x0.float().cpu().norm())
        return {"frame_calls": record.stats.frame_calls + stats.frame_calls, "error": error, "seconds": seconds}


class FieldRunner:
    """The same round trip on an analytic smooth velocity field, fp64, SD3's grid (shift 3)."""

    def __init__(self, name: str, args):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.name, self.scheduler = name, FlowMatchEulerDiscreteScheduler(shift=3.0)
        self.x0 = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        self.describe = f"{name}: analytic v = sin(3 s) z - 0.2 tanh(z) + s, latents {list(self.x0.shape)}, fp64"

    def takes(self, method: str) -> bool:
        """The step rules only (no model to wrap with FreeInv's transforms)."""
        from vidinv.registry import SAMPLERS

        return method in SAMPLERS.names()

    @staticmethod
    def velocity(z, t):
        s = torch.as_tensor(t, dtype=z.dtype) / 1000
        return torch.sin(3 * s) * z - 0.2 * torch.tanh(z) + s

    def run(self, method: str, steps: int) -> dict:
        from vidinv.inversion.flow import flow_table
        from vidinv.registry import SAMPLERS

        table = flow_table(self.scheduler, steps)
        table = type(table)(table.timesteps.double(), table.sigmas.double(), table.num_train_timesteps)
        rule = SAMPLERS.get(method)(table)
        calls = [0]

        def velocity(z, t):
            calls[0] += 1
            return self.velocity(z, t)

        start = time.perf_counter()
        recon = rule.sample(velocity, rule.invert(velocity, self.x0)["latents"][0])
        seconds = time.perf_counter() - start
        error = float((recon - self.x0).norm() / self.x0.norm())
        return {"frame_calls": calls[0] * len(self.x0), "error": error, "seconds": seconds}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        benchlib.set_threads(args.threads)
    budgets = sorted(set(args.steps))
    rows, equal_calls, orders = [], [], []
    for name in args.models:
        runner = (FieldRunner if name == FIELD else ModelRunner)(name, args)
        print(runner.describe, flush=True)
        runner.run("flow", 2)  # warm-up, untimed (2 steps: LTX-Video's shift_terminal grid takes no fewer)
        methods = [m for m in args.methods if runner.takes(m)]
        wanted = {(m, s) for m in methods for s in budgets}
        wanted |= {(m, equal_call_steps(m, e)) for m in methods for e in budgets if equal_call_steps(m, e)}
        results = {}
        for method, steps in sorted(wanted, key=lambda k: (methods.index(k[0]), k[1])):
            result = runner.run(method, steps)
            evaluations = evaluations_of(method, steps)
            results[method, steps] = row = {
                "model": name,
                "method": method,
                "steps": steps,
                "evaluations": evaluations,
                **result,
            }
            rows.append(row)
        table = [results[m, s] for m in methods for s in budgets]
        print(benchlib.format_table(table, COLUMNS), flush=True)
        budget_rows = []
        for e in budgets:
            row = {"model": name, "evaluations": e}
            for m in methods:
                s = equal_call_steps(m, e)
                row[f"{m}_steps"], row[f"{m}_error"] = (s, results[m, s]["error"]) if s else (None, None)
            budget_rows.append(row)
        equal_calls += budget_rows
        print("at equal model calls (evaluations per frame and prompt row):")
        print(benchlib.format_table(budget_rows, equal_columns(methods)), flush=True)
        for m in methods:
            errors = [results[m, s]["error"] for s in budgets]
            local = order(budgets[-2:], errors[-2:])
            orders.append({"model": name, "method": m, "order": order(budgets, errors), "order_last_two": local})
        print("observed order (slope of log error vs log steps):")
        print(benchlib.format_table([o for o in orders if o["model"] == name], ORDER_COLUMNS), flush=True)
        print(flush=True)
    path = benchlib.write_results(
        args.json, "second_order", vars(args), rows, args.device, {"equal_calls": equal_calls, "orders": orders}
    )
    print(f"wrote {path}")
    return 0


def evaluations_of(method: str, steps: int) -> int:
    """Model evaluations per frame and prompt row of one stage (the step rule's own count; FreeInv and
    MBDI step with the flow Euler rule)."""
    from vidinv.registry import SAMPLERS

    return SAMPLERS.get(method if method in SAMPLERS.names() else "flow").evaluations(steps)


COLUMNS = [
    ("method", "method", ""),
    ("steps", "steps", ""),
    ("evaluations", "evals/stage", ""),
    ("frame_calls", "frame-calls", ""),
    ("error", "rel. error", ".3e"),
    ("seconds", "s", ".2f"),
]


def equal_columns(methods) -> list[tuple[str, str, str]]:
    """The equal-calls table's columns: each method's steps and error."""
    steps_errors = [((f"{m}_steps", f"{m} N", ""), (f"{m}_error", f"{m} error", ".3e")) for m in methods]
    return [("evaluations", "evals", ""), *(column for pair in steps_errors for column in pair)]


ORDER_COLUMNS = [
    ("method", "method", ""),
    ("order", "order (fit)", ".2f"),
    ("order_last_two", "order (last two)", ".2f"),
]


if __name__ == "__main__":
    sys.exit(main())
