"""`vidinv app`: a Gradio web app for one edit at a time (pip install 'vidinv[app]').

A clip (uploaded, or the bundled sample), the prompts, the inversion and edit methods, steps, size
and frames become a config over the base config (`--config`, else the defaults); the edit runs
through the same job as `vidinv edit` (`vidinv.jobs.edit.run`) into a run folder of its own under a
temporary root, with a progress bar per stage (the job's tqdm bars, tracked by gr.Progress). The
page shows the source and edited clips side by side, the side-by-side video, the metrics, and
every file of the run folder for download.

The page offers the methods the base config's model runs (`supported_methods`: the edit methods
`vidinv info MODEL` lists). The server holds the page's limits for every caller: the sliders'
ranges, the prompts' length and the config's own checks; the upload is probed as `vidinv edit`
reads it (`vidinv.jobs.streaming.stream_for`) before anything runs; edits run one at a time, at
most `MAX_QUEUE` more wait. A refused request is one line to its caller and one line on the server's
stderr (`vidinv app: refused: <reason>`), no traceback. `vidinv app` listens on 127.0.0.1 unless
`--host` says otherwise and removes its temporary root (run folders and uploads) when it stops
(Ctrl-C, SIGTERM).

API: `/edit` takes (video, source_prompt, target_prompt, [inversion_method, edit_method, steps,
num_frames, height, width]) and returns (edited video, side-by-side video, metrics as JSON):

    from gradio_client import Client, handle_file
    edited, side_by_side, metrics = Client("http://127.0.0.1:7860/").predict(
        handle_file("clip.mp4"), "a man riding a bike", "a robot riding a bike", api_name="/edit")
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from vidinv.config import MAX_SIDE, Config, config_with, load_config
from vidinv.errors import VidinvError, first_line
from vidinv.registry import INVERSION_METHODS

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bikes.mp4"  # present in a checkout
MAX_STEPS = 200  # the steps slider's range: 1..MAX_STEPS
MAX_FRAMES = 128  # the frames slider's range: 1..MAX_FRAMES
MAX_PROMPT = 2000  # characters of a prompt (T5's 512 tokens; CLIP reads 77)
MAX_QUEUE = 4  # requests waiting behind the running edit; more are refused
HOST = "127.0.0.1"  # where `vidinv app` listens unless --host says otherwise


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio
    except ImportError as err:
        raise VidinvError("vidinv app needs Gradio: pip install 'vidinv[app]'") from err
    return gradio


def refused(reason: str) -> str:
    """Log a refused request: one line on stderr, no traceback. Returns `reason`."""
    print(f"vidinv app: refused: {reason}", file=sys.stderr, flush=True)
    return reason


def supported_methods(config: Config) -> tuple[list[str], list[str]]:
    """(inversion methods, edit methods) that `config.model` runs: the edit methods `vidinv info MODEL`
    lists (`vidinv.models.report.model_report`), the inversion methods whose step rule the model's
    kind takes (`vidinv.inversion.flow.record_sampler`: flow models, or UNets)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidinv.inversion.flow import record_sampler
    from vidinv.models.families import FAMILIES
    from vidinv.models.report import model_report

    m = config.model
    rows = dict(model_report(m.pretrained, single_file_config=m.single_file_config, prediction_type=m.prediction_type))
    scheduler = FlowMatchEulerDiscreteScheduler() if FAMILIES[rows["family"]].flow else None

    def runs(name: str) -> bool:
        try:
            record_sampler(INVERSION_METHODS.get(name), scheduler)
        except VidinvError:
            return False
        return True

    inversion = [name for name in INVERSION_METHODS.names() if runs(name)]
    return inversion, [name for name in rows["edit methods"].split(", ") if name]


class AppEditor:
    """Turns the form's values into a config over `base` and runs the edit job in a new run folder."""

    def __init__(self, base: Config, root: str | Path | None = None):
        """Run folders go under `root`; without one, under a new temporary folder removed at exit."""
        self.base = base
        if root is None:
            root = tempfile.mkdtemp(prefix="vidinv-app-")
            atexit.register(shutil.rmtree, root, ignore_errors=True)
        self.root = Path(root)
        self._runs = itertools.count()

    def config_for(self, video: str, source_prompt: str, target_prompt: str, **settings) -> Config:
        """The run's config, checked as `vidinv edit` checks its config and reads its clip (the upload
        is probed); `settings` keys are config keys with '__' for '.', None = the base's value."""
        if not video:
            raise VidinvError("no video: upload a clip or take the sample")
        for name, prompt in (("source prompt", source_prompt), ("target prompt", target_prompt)):
            if len(prompt or "") > MAX_PROMPT:
                raise VidinvError(f"{name}: {len(prompt)} characters, at most {MAX_PROMPT}")
        values = {key.replace("__", "."): value for key, value in settings.items() if value is not None}
        values |= {
            "video.path": str(video),
            "inversion.source_prompt": source_prompt or "",
            "edit.target_prompt": target_prompt or "",
            "runtime.output_dir": str(self.root / f"run-{next(self._runs):04d}"),
            "runtime.record_dir": None,
            "runtime.overwrite": False,
        }
        config = config_with(self.base, values, "app")
        from vidinv.jobs.streaming import stream_for

        stream_for(config)  # the clip as the edit job opens it: a one-line error for what is no video
        return config

    def edit(self, config: Config) -> tuple[str, str, dict]:
        """(edited.mp4, side_by_side.mp4, metrics) of the edit job run with `config`; a failed run
        leaves no run folder behind."""
        from vidinv.jobs import edit

        out = Path(config.runtime.output_dir)
        try:
            edit.run(config, quiet=False)  # progress bars on: gr.Progress follows them
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        return str(out / "edited.mp4"), str(out / "side_by_side.mp4"), {**metrics, "output_dir": str(out)}

    def run_files(self, metrics) -> list[str]:
        """The files of the run folder named by `metrics` (only a folder under the root)."""
        folder = Path((metrics or {}).get("output_dir") or self.root / "none").resolve()
        if not folder.is_dir() or not folder.is_relative_to(self.root.resolve()):
            return []
        return sorted(str(p) for p in folder.iterdir() if p.is_file())


def _size(value) -> int | None:
    """A size field: 0 or empty = the source's size."""
    return int(value) if value else None


def _refusing_blocks(gr):
    """gr.Blocks whose requests with values no input takes (out of a slider's range, not a choice, a
    file outside the upload folder, a malformed payload) are refused in one line, no traceback."""

    class Blocks(gr.Blocks):
        async def preprocess_data(self, *args, **kwargs):
            try:
                return await super().preprocess_data(*args, **kwargs)
            except Exception as err:  # gradio's checks of the inputs: the request is refused
                reason = err.message if isinstance(err, gr.Error) else first_line(err)
                raise gr.Error(refused(reason), print_exception=False) from None

    return Blocks


def _named(gr, component):
    """`component` (a gradio input) whose range and choice errors name it (`steps: Value ...`)."""
    preprocess = component.preprocess

    def named(payload):
        try:
            return preprocess(payload)
        except gr.Error as err:
            raise gr.Error(f"{component.label}: {err.message}") from None

    component.preprocess = named
    return component


def _log_queue_refusals(queue) -> None:
    """A request the full queue refuses is one line on stderr too."""
    push = queue.push

    async def logged_push(*args, **kwargs):
        result = await push(*args, **kwargs)
        if not result[0]:
            refused(str(result[1]))
        return result

    queue.push = logged_push


def build_app(base: Config | None = None, root: str | Path | None = None, *, max_queue: int = MAX_QUEUE):
    """The Gradio Blocks app (queued, not launched) editing with `base` (default: the built-in defaults):
    edits one at a time, at most `max_queue` waiting."""
    gr = _import_gradio()
    base = base or load_config()
    editor = AppEditor(base, root)
    v, inv = base.video, base.inversion
    inversion_methods, edit_methods = supported_methods(base)

    inversion_default = inv.method if inv.method in inversion_methods else inversion_methods[0]
    edit_default = base.edit.method if base.edit.method in edit_methods else edit_methods[0]
    steps_default, frames_default = min(inv.steps, MAX_STEPS), min(v.num_frames or MAX_FRAMES, MAX_FRAMES)

    def run_edit(
        video,
        source_prompt,
        target_prompt,
        inversion_method=inversion_default,
        edit_method=edit_default,
        steps=steps_default,
        num_frames=frames_default,
        height=v.height or 0,
        width=v.width or 0,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's way to ask for a progress bar)
    ):
        progress(0, desc="loading the model and the clip")
        try:
            config = editor.config_for(
                video,
                source_prompt,
                target_prompt,
                inversion__method=inversion_method,
                edit__method=edit_method,
                inversion__steps=int(steps),
                video__num_frames=int(num_frames),
                video__height=_size(height),
                video__width=_size(width),
            )
            return editor.edit(config)
        except VidinvError as err:  # the upload's name stands for its path on the server
            reason = first_line(err).replace(str(video), Path(video).name) if video else first_line(err)
            raise gr.Error(refused(reason), print_exception=False) from None

    with _refusing_blocks(gr)(title="vidinv: text-driven video editing") as app:
        gr.Markdown("## vidinv: zero-shot text-driven video editing by diffusion inversion")
        with gr.Row():
            source = gr.Video(label="source clip", elem_id="source", sources=["upload"])
            edited = gr.Video(label="edited clip", elem_id="edited", interactive=False)
        with gr.Row():
            prompts = {"max_length": MAX_PROMPT}
            source_prompt = gr.Textbox(
                label="source prompt", value=inv.source_prompt, elem_id="source-prompt", **prompts
            )
            target_prompt = gr.Textbox(
                label="target prompt", value=base.edit.target_prompt, elem_id="target-prompt", **prompts
            )
        with gr.Row():
            inversion_method = gr.Dropdown(inversion_methods, value=inversion_default, label="inversion")
            edit_method = gr.Dropdown(edit_methods, value=edit_default, label="edit")
            steps = gr.Slider(1, MAX_STEPS, value=steps_default, step=1, label="steps")
            num_frames = gr.Slider(1, MAX_FRAMES, value=frames_default, step=1, label="frames")
            size = {"precision": 0, "minimum": 0, "maximum": MAX_SIDE}
            height = gr.Number(value=v.height or 0, label="height (0 = source)", **size)
            width = gr.Number(value=v.width or 0, label="width (0 = source)", **size)
        with gr.Row():
            sample = gr.Button("use the bundled sample", visible=SAMPLE.is_file())
            run = gr.Button("edit", variant="primary", elem_id="run")
        side_by_side = gr.Video(label="source | edited", elem_id="side-by-side", interactive=False)
        with gr.Row():
            metrics = gr.JSON(label="metrics", elem_id="metrics")
            files = gr.File(label="files", file_count="multiple", elem_id="files")
        inputs = [source, source_prompt, target_prompt, inversion_method, edit_method, steps, num_frames, height, width]
        for field in inputs[3:]:
            _named(gr, field)
        sample.click(lambda: str(SAMPLE), None, source, api_visibility="private")
        run.click(run_edit, inputs, [edited, side_by_side, metrics], api_name="edit").then(
            editor.run_files, metrics, files, api_visibility="private"
        )
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    _log_queue_refusals(app._queue)
    app.vidinv_root = editor.root
    return app


def allowed_paths(app) -> list[str]:
    """What the server may hand out: the run folders and the bundled sample."""
    return [str(app.vidinv_root), str(SAMPLE.parent)]


def launch(app, host: str = HOST, port: int = 7860) -> None:
    """Serve `app` (from `build_app`) on host:port in the background, quietly: no banner, no
    HTTP request lines (httpx's, which gradio's startup check makes)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            allowed_paths=allowed_paths(app),
            prevent_thread_lock=True,
            quiet=True,
        )
    except OSError:  # gradio's message names its own knobs (GRADIO_SERVER_PORT, launch())
        raise VidinvError(
            f"app: cannot listen on {host}:{port}: the port is taken or the address is not this machine's"
            " (choose another --port / --host)"
        ) from None


def run_cli(args) -> int:
    """`vidinv app`: serve until Ctrl-C or SIGTERM, then close the server and remove the temporary
    root (run folders, and gradio's uploads unless GRADIO_TEMP_DIR names another folder)."""
    root = Path(tempfile.mkdtemp(prefix="vidinv-app-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(root / "uploads"))
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app = build_app(load_config(args.config) if args.config else None, root)
        launch(app, args.host, args.port)
        try:
            print(f"vidinv: app on http://{args.host}:{args.port}/ (runs under {root}); Ctrl-C stops it", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            app.close(verbose=False)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        shutil.rmtree(root, ignore_errors=True)
    return 0
