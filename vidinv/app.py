"""`vidinv app`: a Gradio web app for one edit at a time (pip install 'vidinv[app]').

A clip (uploaded, or the bundled sample), the prompts, the inversion and edit methods, steps, size
and frames become a config over the base config (`--config`, else the defaults); the edit runs
through the same job as `vidinv edit` (`vidinv.jobs.edit.run`) into a run folder of its own under a
temporary root, with a progress bar per stage (the job's tqdm bars, tracked by gr.Progress). The
page shows the source and edited clips side by side, the side-by-side video, the metrics, and
every file of the run folder for download.

API: `/edit` takes (video, source_prompt, target_prompt, [inversion_method, edit_method, steps,
num_frames, height, width]) and returns (edited video, side-by-side video, metrics as JSON):

    from gradio_client import Client, handle_file
    edited, side_by_side, metrics = Client("http://127.0.0.1:7860/").predict(
        handle_file("clip.mp4"), "a man riding a bike", "a robot riding a bike", api_name="/edit")
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path

from vidinv.config import Config, config_with, load_config
from vidinv.errors import VidinvError
from vidinv.registry import EDIT_METHODS, INVERSION_METHODS

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bikes.mp4"  # present in a checkout


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio
    except ImportError as err:
        raise VidinvError("vidinv app needs Gradio: pip install 'vidinv[app]'") from err
    return gradio


class AppEditor:
    """Turns the form's values into a config over `base` and runs the edit job in a new run folder."""

    def __init__(self, base: Config, root: str | Path | None = None):
        self.base = base
        self.root = Path(root or tempfile.mkdtemp(prefix="vidinv-app-"))
        self._runs = itertools.count()

    def config_for(self, video: str, source_prompt: str, target_prompt: str, **settings) -> Config:
        """The run's config; `settings` keys are config keys with '__' for '.', None = the base's value."""
        if not video:
            raise VidinvError("no video: upload a clip or take the sample")
        run_dir = self.root / f"run-{next(self._runs):04d}"
        values = {key.replace("__", "."): value for key, value in settings.items() if value is not None}
        values |= {
            "video.path": str(video),
            "inversion.source_prompt": source_prompt or "",
            "edit.target_prompt": target_prompt or "",
            "runtime.output_dir": str(run_dir),
            "runtime.record_dir": None,
            "runtime.overwrite": False,
        }
        return config_with(self.base, values, "app")

    def edit(self, config: Config) -> tuple[str, str, dict]:
        """(edited.mp4, side_by_side.mp4, metrics) of the edit job run with `config`."""
        from vidinv.jobs import edit

        edit.run(config, quiet=False)  # progress bars on: gr.Progress follows them
        out = Path(config.runtime.output_dir)
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        return str(out / "edited.mp4"), str(out / "side_by_side.mp4"), {**metrics, "output_dir": str(out)}


def _size(value) -> int | None:
    """A size field: 0 or empty = the source's size."""
    return int(value) if value else None


def build_app(base: Config | None = None, root: str | Path | None = None):
    """The Gradio Blocks app (not launched) editing with `base` (default: the built-in defaults)."""
    gr = _import_gradio()
    base = base or load_config()
    editor = AppEditor(base, root)
    v, inv = base.video, base.inversion

    def run_edit(
        video,
        source_prompt,
        target_prompt,
        inversion_method=inv.method,
        edit_method=base.edit.method,
        steps=inv.steps,
        num_frames=v.num_frames or 0,
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
                video__num_frames=int(num_frames) or None,
                video__height=_size(height),
                video__width=_size(width),
            )
            return editor.edit(config)
        except VidinvError as err:
            raise gr.Error(str(err)) from err

    def run_files(metrics):
        folder = Path((metrics or {}).get("output_dir", ""))
        return sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []

    with gr.Blocks(title="vidinv: text-driven video editing") as app:
        gr.Markdown("## vidinv: zero-shot text-driven video editing by diffusion inversion")
        with gr.Row():
            source = gr.Video(label="source clip", elem_id="source", sources=["upload"])
            edited = gr.Video(label="edited clip", elem_id="edited", interactive=False)
        with gr.Row():
            source_prompt = gr.Textbox(label="source prompt", value=inv.source_prompt, elem_id="source-prompt")
            target_prompt = gr.Textbox(label="target prompt", value=base.edit.target_prompt, elem_id="target-prompt")
        with gr.Row():
            inversion_method = gr.Dropdown(list(INVERSION_METHODS.names()), value=inv.method, label="inversion")
            edit_method = gr.Dropdown(list(EDIT_METHODS.names()), value=base.edit.method, label="edit")
            steps = gr.Slider(1, 200, value=inv.steps, step=1, label="steps")
            num_frames = gr.Slider(0, 128, value=v.num_frames or 0, step=1, label="frames (0 = all)")
            height = gr.Number(value=v.height or 0, precision=0, label="height (0 = source)")
            width = gr.Number(value=v.width or 0, precision=0, label="width (0 = source)")
        with gr.Row():
            sample = gr.Button("use the bundled sample", visible=SAMPLE.is_file())
            run = gr.Button("edit", variant="primary", elem_id="run")
        side_by_side = gr.Video(label="source | edited", elem_id="side-by-side", interactive=False)
        with gr.Row():
            metrics = gr.JSON(label="metrics", elem_id="metrics")
            files = gr.File(label="files", file_count="multiple", elem_id="files")
        inputs = [source, source_prompt, target_prompt, inversion_method, edit_method, steps, num_frames, height, width]
        sample.click(lambda: str(SAMPLE), None, source, api_visibility="private")
        run.click(run_edit, inputs, [edited, side_by_side, metrics], api_name="edit").then(
            run_files, metrics, files, api_visibility="private"
        )
    app.vidinv_root = editor.root
    return app


def allowed_paths(app) -> list[str]:
    """What the server may hand out: the run folders and the bundled sample."""
    return [str(app.vidinv_root), str(SAMPLE.parent)]


def run_cli(args) -> int:
    base = load_config(args.config) if args.config else None
    app = build_app(base)
    print(f"vidinv: app on http://{args.host}:{args.port}/ (runs under {app.vidinv_root}); Ctrl-C stops it")
    app.queue().launch(server_name=args.host, server_port=args.port, allowed_paths=allowed_paths(app))
    return 0
