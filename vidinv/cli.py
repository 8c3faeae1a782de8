"""`vidinv` command line: `vidinv COMMAND CONFIG [key=value ...]`.

Every vidinv error or bad config exits with code 2 and one line on stderr (`--debug` shows the
traceback); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from vidinv.errors import VidinvError, out_of_memory
from vidinv.hostmemory import release_large_blocks
from vidinv.interrupts import Interrupted
from vidinv.registry import EDIT_METHODS, INVERSION_METHODS
from vidinv.run_lock import release_run_locks

# command -> (module:function, help). Jobs take (config, *, quiet) and return a summary line.
JOBS = {
    "edit": (
        "vidinv.jobs.edit:run",
        "invert with the source prompt, edit towards the target prompt (edit.method: {edit}), write edited/side-by-side videos and metrics",
    ),
    "encode": (
        "vidinv.jobs.encode:run",
        "decode the clip, VAE round trip in chunks, write source/roundtrip videos and PSNR",
    ),
    "invert": (
        "vidinv.jobs.invert:run",
        "invert the clip (inversion.method: {inversion}); write the record to OUTPUT/inversion/",
    ),
    "reconstruct": (
        "vidinv.jobs.reconstruct:run",
        "invert (or reuse the record), regenerate with the source prompt, write reconstruction.mp4 and PSNR",
    ),
}


def _info(args) -> int:
    if args.model is None:
        from vidinv.info import environment_report

        print(environment_report())
        return 0
    from vidinv.models.report import format_rows, model_report

    rows = model_report(args.model, single_file_config=args.single_file_config, prediction_type=args.prediction_type)
    print(format_rows(rows))
    return 0


def _eval(args) -> int:
    from vidinv.jobs.evaluate import run_cli

    return run_cli(args)


def _plan(args) -> int:
    from vidinv.config import load_config
    from vidinv.planning import plan_run

    print(plan_run(load_config(args.config, args.overrides), args.for_command).summary())
    return 0


def _doctor(args) -> int:
    import time

    from vidinv.doctor import HEADER, format_row, run_doctor, summary

    config = None
    if args.config is not None:
        from vidinv.config import load_config

        config = load_config(args.config, args.overrides)
    start = time.perf_counter()
    print(HEADER, flush=True)
    rows, ok = run_doctor(config, args.for_command, on_row=lambda row: print(format_row(row), flush=True))
    print(summary(rows, time.perf_counter() - start))
    return 0 if ok else 1


def _tune(args) -> int:
    from vidinv.jobs.tune import run_cli

    return run_cli(args)


def _batch(args) -> int:
    from vidinv.batch.runner import run_cli

    return run_cli(args)


def _app(args) -> int:
    from vidinv.app import run_cli

    return run_cli(args)


def _accept_global_flags(command: argparse.ArgumentParser) -> None:
    """--debug and --quiet also after the command's name."""
    command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    command.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidinv",
        description="Zero-shot text-driven video editing by diffusion inversion.",
        epilog="Config overrides are dotted keys, e.g. inversion.steps=20 runtime.output_dir=out/x",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars; only the final summary")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    info = sub.add_parser(
        "info", help="versions, devices, decoders, attention backends; with MODEL: its family, sizes, encoders"
    )
    info.add_argument(
        "model", nargs="?", help="a hub id, diffusers folder, .safetensors/.ckpt file or built-in name (tiny, ...)"
    )
    info.add_argument("--single-file-config", metavar="SOURCE", help="config folder / hub id for a single file")
    info.add_argument(
        "--prediction-type",
        default="auto",
        choices=("auto", "epsilon", "v_prediction", "sample"),
        help="as model.prediction_type",
    )
    info.set_defaults(handler=_info)
    evaluate = sub.add_parser(
        "eval",
        help="compare an edited clip with its source: warp error, frame change, flicker, PSNR, SSIM "
        "(of the unedited region too with --mask), CLIP-T/CLIP-F with --clip",
        description="Compare an edited clip (vidinv's or another tool's) with its source. Both clips are "
        "measured as 8-bit pictures, as `vidinv edit` measures its metrics.json: given the original clip with "
        "the run's --start/--num-frames/--stride (and --source-resize when the run resized it) and the run's "
        "lossless edited.mkv (runtime.codec=ffv1) or edited/ PNG folder, eval gives the run's metrics exactly. "
        "An H.264 edited.mp4 differs by the codec's error d (decoded minus 8-bit picture): the source metrics "
        "stay exact, warp_error_edited moves by at most the warp error of d itself along the source's flow, "
        "frame_change_edited by at most d's frame change. The run's source.mp4 as SOURCE adds H.264's error "
        "to the source (and its flow) too.",
        epilog="The selection applies to SOURCE only: an edit's output holds just the selected frames "
        "(its frame 0 is SOURCE's frame --start), so EDITED is read whole.",
    )
    evaluate.add_argument("source", help="the source video file or image folder")
    evaluate.add_argument("edited", help="the edited video, of the (selected) source's size and frame count")
    evaluate.add_argument(
        "--start", type=int, default=0, help="SOURCE's first frame, as video.start (default 0); EDITED is read whole"
    )
    evaluate.add_argument(
        "--num-frames",
        type=int,
        default=None,
        metavar="N",
        help="SOURCE frames kept after the stride, as video.num_frames (default: to the end)",
    )
    evaluate.add_argument("--stride", type=int, default=1, help="keep every n-th SOURCE frame, as video.stride")
    from vidinv.config import CHOICES  # already imported (by vidinv/__init__.py)

    resize_modes = CHOICES["video.resize"]
    evaluate.add_argument(
        "--source-resize",
        choices=resize_modes,
        metavar="MODE",
        help=f"fit SOURCE to EDITED's size as the edit does with video.height/width and video.resize=MODE "
        f"({' | '.join(resize_modes)}); leave it out when the run kept the source's size",
    )
    evaluate.add_argument(
        "--resize", action="store_true", help="stretch an edited clip of another size to the source's size"
    )
    evaluate.add_argument(
        "--mask",
        metavar="PATH",
        help="the edit's mask (a video, an image folder or one image for every frame; white = edited, "
        "of the compared clips' size): adds PSNR and SSIM of the unedited region",
    )
    evaluate.add_argument(
        "--clip", metavar="MODEL", help="a CLIP model (hub id or folder): adds CLIP-F, and CLIP-T with --prompt"
    )
    evaluate.add_argument("--prompt", metavar="TEXT", help="the target prompt, for CLIP-T (with --clip)")
    evaluate.add_argument("--json", metavar="PATH", help="also write the metrics to this JSON file")
    evaluate.set_defaults(handler=_eval)
    plan = sub.add_parser(
        "plan", help="predict frame-calls, peak device/host memory and the FateZero store (no weights)"
    )
    plan.add_argument("config", help="YAML config file (see configs/)")
    plan.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    plan.add_argument("--for", dest="for_command", choices=["edit", "invert", "reconstruct"], default="edit")
    plan.set_defaults(handler=_plan)
    doctor = sub.add_parser(
        "doctor",
        help="self-check: torch/CUDA, devices and free memory, fp16/bf16, attention backends, decoders, "
        "encoder byte stability, the hub and its cache; with CONFIG: whether its plan fits (exit 1 on a FAIL)",
        description="Check this machine for vidinv in seconds: one row per check (ok / warn / FAIL / skip); "
        "exit 1 when a check fails.",
    )
    doctor.add_argument("config", nargs="?", help="a YAML config: also check that its plan fits the free memory")
    doctor.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    doctor.add_argument("--for", dest="for_command", choices=["edit", "invert", "reconstruct"], default="edit")
    doctor.set_defaults(handler=_doctor)
    names = {"edit": " | ".join(EDIT_METHODS.names()), "inversion": " | ".join(INVERSION_METHODS.names())}
    batch = sub.add_parser(
        "batch",
        help="edit clips x prompt pairs x a config grid from a manifest or a benchmark folder (each clip inverted "
        "once); per-method report, charts, gallery",
        description="Run a manifest's or a benchmark folder's edits (local or Ray); exit 1 when any item failed.",
    )
    batch.add_argument(
        "manifest",
        help="YAML manifest (base, overrides, clips, prompts or benchmark, methods, grid, output_dir, backend), or a "
        "benchmark folder in the FiVE-Bench layout (edit_prompt/*.json, images/ or videos/, bmasks/)",
    )
    batch.add_argument("overrides", nargs="*", metavar="key=value", help="manifest keys or config overrides")
    _accept_global_flags(batch)
    batch.set_defaults(handler=_batch)
    tune = sub.add_parser(
        "tune",
        help="reconstruct a short proxy of the clip with every inversion method and a small grid of its settings "
        "at an equal budget of frame-calls; rank by PSNR; write tuned.yaml, tune.json/csv/png",
        description="Choose the inversion for a clip: on its first N frames at a lower size, invert and reconstruct "
        "with every inversion method the model runs (steps, FreeInv transforms, DDPM-EF skip), each within the same "
        "budget of frame-calls; rank by reconstruction PSNR (vs the VAE round trip, 0.01 dB), then frame-calls, then "
        "name; write the best as tuned.yaml, with tune.json, tune.csv and tune.png in runtime.output_dir.",
    )
    tune.add_argument("config", help="YAML config file (see configs/)")
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    tune.add_argument("--frames", type=int, metavar="N", help="proxy frames (default 4; 5 on a video model)")
    tune.add_argument(
        "--size", type=int, metavar="S", help="proxy width in px (default half the clip's; height by its aspect)"
    )
    tune.add_argument(
        "--budget",
        type=int,
        metavar="CALLS",
        help="frame-calls (inversion + reconstruction) each candidate may make (default: the config's own method)",
    )
    tune.add_argument("--methods", metavar="A,B", help="only these inversion methods (default: all the model runs)")
    _accept_global_flags(tune)
    tune.set_defaults(handler=_tune)
    app = sub.add_parser("app", help="a Gradio web app for one edit at a time (pip install 'vidinv[app]')")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    app.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    app.add_argument("--config", help="base config for the app's edits (default: the built-in defaults)")
    app.set_defaults(handler=_app)
    for name, (_, help_text) in JOBS.items():
        help_text = help_text.format(**names)
        job = sub.add_parser(name, help=help_text, description=help_text)
        job.add_argument("config", help="YAML config file (see configs/)")
        job.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        _accept_global_flags(job)
        job.set_defaults(handler=_run_job, job=name)
    return parser


def _run_job(args) -> int:
    from vidinv.config import load_config

    config = load_config(args.config, args.overrides)
    module_name, function_name = JOBS[args.job][0].split(":")
    job = getattr(importlib.import_module(module_name), function_name)
    summary = job(config, quiet=args.quiet)
    if summary:
        print(summary)
    return 0


class _Once(logging.Filter):
    """Lets each distinct message through once per command."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        seen = message in self.seen
        self.seen.add(message)
        return not seen


def _log_once() -> None:
    """vidinv's notes and warnings each once per command (a prompt is encoded more than once)."""
    logger = logging.getLogger("vidinv")
    for old in [f for f in logger.filters if isinstance(f, _Once)]:
        logger.removeFilter(old)
    logger.addFilter(_Once())


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (ffmpeg log lines, download hints, weight-loading bars) is noise on the command line."""
    from vidinv.io.decoders import quiet_libraries

    quiet_libraries(not debug)
    if debug:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.debug)
    release_large_blocks()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="vidinv: %(message)s")
    _log_once()
    try:
        return args.handler(args)
    except Exception as err:
        error = err if isinstance(err, VidinvError) else out_of_memory(err)
        if error is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"vidinv: error: {error}", file=sys.stderr)
        return VidinvError.exit_code
    except Interrupted as stop:  # a first Ctrl-C, taken at a step boundary (vidinv.interrupts)
        print(f"vidinv: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the sampling loops
        print("vidinv: interrupted", file=sys.stderr)
        return 130
    finally:
        release_run_locks()


if __name__ == "__main__":
    sys.exit(main())
