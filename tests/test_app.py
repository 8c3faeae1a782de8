"""`vidinv app`: one Gradio server on the tiny model, driven by gradio_client (/edit) and by a real
headless browser (Debian's chromium through Playwright), which saves a screenshot of the page
(to $VIDINV_APP_SCREENSHOT, default a tmp file); and `python -m vidinv app` in a process of its own,
stopped by SIGTERM / SIGINT."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import REPO
from vidinv.config import load_config
from vidinv.io import read_video

pytest.importorskip("gradio", reason="the app needs pip install -e '.[app]'")

SAMPLE = REPO / "samples" / "bikes.mp4"
TINY = ["video.num_frames=2", "video.height=64", "video.width=64", "inversion.steps=2"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on the tiny model (2 frames, 64x64, 2 steps by default), on a loopback port: its url
    and its run root."""
    from vidinv.app import build_app, launch

    app = build_app(load_config(REPO / "configs" / "demo.yaml", TINY), root=tmp_path_factory.mktemp("app-runs"))
    port = free_port()
    launch(app, port=port)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", root=app.vidinv_root)
    app.close()


def test_the_edit_endpoint_returns_a_decodable_edited_video_a_side_by_side_and_metrics(server):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    edited, side_by_side, metrics = client.predict(
        handle_file(str(SAMPLE)), "a man riding a bike", "a robot riding a bike", api_name="/edit"
    )
    assert read_video(edited, size=None).frames.shape == (2, 3, 64, 64)
    assert read_video(side_by_side, size=None).frames.shape == (2, 3, 64, 128)
    metrics = metrics if isinstance(metrics, dict) else json.loads(metrics)
    assert metrics["target_prompt"] == "a robot riding a bike" and metrics["frame_calls"]["edit"] > 0
    assert (Path(metrics["output_dir"]) / "config.yaml").is_file()  # the edit job's own run folder


def test_the_app_and_the_cli_with_the_same_settings_write_the_same_bytes(server, tmp_path):
    """The app's edit and `vidinv edit` on the config the app resolved (its run folder's config.yaml,
    the clip given by its path): edited, source and side-by-side videos of one md5 each."""
    from gradio_client import Client, handle_file

    from tests.test_reproducible import videos_md5
    from vidinv.cli import main

    client = Client(server.url, verbose=False)
    *_, metrics = client.predict(
        handle_file(str(SAMPLE)), "a man riding a bike", "a robot riding a bike", api_name="/edit"
    )
    metrics = metrics if isinstance(metrics, dict) else json.loads(metrics)
    app_run = Path(metrics["output_dir"])
    argv = [f"video.path={SAMPLE}", f"runtime.output_dir={tmp_path / 'cli'}", "runtime.record_dir=null"]
    assert main(["--quiet", "edit", str(app_run / "config.yaml"), *argv]) == 0
    assert videos_md5(tmp_path / "cli") == videos_md5(app_run)


def test_a_bad_setting_on_the_endpoint_is_a_one_line_error(server):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    with pytest.raises(Exception, match="multiple of 8"):
        client.predict(handle_file(str(SAMPLE)), "a", "b", height=60, api_name="/edit")


PLAYABLE = "v => v.readyState >= 2 && v.duration > 0 && !v.error"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install -y chromium)")
def test_in_a_browser_uploading_the_sample_and_editing_shows_a_playable_source_and_the_edited_video(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    shot = Path(os.environ.get("VIDINV_APP_SCREENSHOT") or Path(tempfile.gettempdir()) / "vidinv-app.png")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server.url)
        page.set_input_files("#source input[type=file]", str(SAMPLE))
        source = page.locator("#source video")
        source.wait_for(timeout=30_000)
        page.wait_for_function(f"({PLAYABLE})(document.querySelector('#source video'))", timeout=30_000)
        page.fill("#target-prompt textarea", "a bronze statue riding a bike")
        page.click("#run")
        page.wait_for_function(f"(v => v && ({PLAYABLE})(v))(document.querySelector('#edited video'))", timeout=120_000)
        page.locator("#files a").first.wait_for(timeout=30_000)
        files = "".join(page.locator("#files").inner_text().split())
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert "edited.mp4" in files and "metrics.json" in files
    assert shot.stat().st_size > 10_000


def info_rows(model: str, capsys) -> dict[str, str]:
    """The rows `vidinv info MODEL` prints (name, two spaces or more, value)."""
    from vidinv.cli import main

    capsys.readouterr()
    assert main(["info", model]) == 0
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())


def test_the_page_offers_only_the_methods_the_model_runs_the_edit_methods_vidinv_info_lists(server, capsys):
    from gradio_client import Client

    from vidinv.app import supported_methods

    params = Client(server.url, verbose=False).view_api(return_format="dict", print_info=False)
    params = {p["label"]: p["type"] for p in params["named_endpoints"]["/edit"]["parameters"]}
    assert params["inversion"]["enum"] == ["ddim", "freeinv", "mbdi", "ddpm_ef"]  # no flow on a UNet
    unet_edits = ["pnp", "tokenflow", "fatezero"]  # no flowedit
    assert params["edit"]["enum"] == info_rows("tiny", capsys)["edit methods"].split(", ") == unet_edits
    inversion, edit = supported_methods(load_config(overrides=["model.pretrained=tiny-sd3"]))
    # DDPM-EF's stochastic step is no flow step; the second-order flow rules run on flow models only
    assert inversion == ["ddim", "freeinv", "mbdi", "flow", "rf_solver", "fireflow"]
    assert edit == info_rows("tiny-sd3", capsys)["edit methods"].split(", ") == ["pnp", "flowedit"]


def run_root_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_endpoint_refuses_out_of_range_values_long_prompts_and_non_videos_in_one_line_each_leaving_nothing(
    server, tmp_path, capfd
):
    """The page's limits hold on the server: the sliders' ranges, the size field's and the config's
    checks, the prompt length, the models' methods, the clip read as `vidinv edit` reads it. Each
    refusal is one line to the client and one `vidinv app: refused:` line on stderr, no traceback;
    the run root is left as it was."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from vidinv.app import MAX_PROMPT

    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video\n" * 100)
    sample = handle_file(str(SAMPLE))
    cases = [
        ((sample, "a", "b"), {"steps": 10**6}, "steps: Value 1000000 is greater than maximum value 200"),
        ((sample, "a", "b"), {"num_frames": 0}, "frames: Value 0 is less than minimum value 1"),
        ((sample, "a", "b"), {"height": 100000}, "height (0 = source): Value 100000 is greater than maximum"),
        ((sample, "a", "b"), {"width": 100000}, "width (0 = source): Value 100000 is greater than maximum"),
        ((sample, "a", "b"), {"width": 4100}, "'video.width' is 4100, expected null or a multiple of 8"),
        ((sample, "a" * 10_000, "b"), {}, f"source prompt: 10000 characters, at most {MAX_PROMPT}"),
        ((sample, "a", "b" * 10_000), {}, f"target prompt: 10000 characters, at most {MAX_PROMPT}"),
        ((handle_file(str(not_a_video)), "a", "b"), {}, "notes.mp4: cannot be decoded as a video"),
        ((sample, "a", "b"), {"inversion_method": "flow"}, "inversion: Value: flow is not in the list of choices"),
        ((sample, "a", "b"), {"edit_method": "flowedit"}, "edit: Value: flowedit is not in the list of choices"),
    ]
    client = Client(server.url, verbose=False)
    before = run_root_listing(server.root)
    capfd.readouterr()
    for args, settings, reason in cases:
        with pytest.raises(AppError) as refused:
            client.predict(*args, **settings, api_name="/edit")
        message = str(refused.value)
        assert reason in message and "\n" not in message and os.sep not in message, message  # no server paths
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vidinv app: refused: ")]
    assert len(lines) == len(cases) and all(reason in line for line, (_, _, reason) in zip(lines, cases)), err
    assert run_root_listing(server.root) == before


def test_edits_run_one_at_a_time_and_at_most_max_queue_wait_the_rest_are_refused(server, capfd):
    """While an edit runs, requests beyond MAX_QUEUE are refused at once ('Queue is full'), each in a
    line on stderr; those queued run after it (here: refused by the config)."""
    from gradio_client import Client, handle_file

    from vidinv.app import MAX_QUEUE

    client = Client(server.url, verbose=False)
    sample = handle_file(str(SAMPLE))
    capfd.readouterr()
    running = client.submit(sample, "a man riding a bike", "a robot", steps=10, api_name="/edit")  # a few seconds
    deadline = time.monotonic() + 60
    while running.status().code.name not in ("PROCESSING", "PROGRESS", "FINISHED"):  # it left the queue
        assert time.monotonic() < deadline, running.status()
        time.sleep(0.05)
    waiting = [client.submit(sample, "a", "b", height=60, api_name="/edit") for _ in range(MAX_QUEUE + 2)]
    outcomes = []
    for job in waiting:
        with pytest.raises(Exception) as refused:
            job.result(timeout=120)
        outcomes.append(str(refused.value))
    assert running.result(timeout=120)[2]["frame_calls"]["edit"] > 0
    full = [o for o in outcomes if "Queue is full" in o]
    assert len(full) == 2 and len([o for o in outcomes if "multiple of 8" in o]) == MAX_QUEUE, outcomes
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("vidinv app: refused: ")]
    assert len(lines) == MAX_QUEUE + 2


def test_the_files_list_shows_only_run_folders_under_the_app_root(tmp_path):
    from vidinv.app import AppEditor

    editor = AppEditor(load_config(), root=tmp_path / "root")
    (tmp_path / "root" / "run-0000").mkdir(parents=True)
    (tmp_path / "root" / "run-0000" / "metrics.json").write_text("{}")
    assert editor.run_files({"output_dir": str(tmp_path / "root" / "run-0000")}) == [
        str(tmp_path / "root" / "run-0000" / "metrics.json")
    ]
    assert editor.run_files({"output_dir": str(REPO)}) == []  # metrics come from the client: no other folder
    assert editor.run_files({"output_dir": str(tmp_path / "root" / ".." / "..")}) == []


# --- `python -m vidinv app` in a process of its own --------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (Linux: /proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                packed = bytes.fromhex(address)
                family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
                words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))  # host-order words
                found.add(socket.inet_ntop(family, words))
    return found


class CliServer:
    """`python -m vidinv app --config CONFIG --port PORT [ARGS]` with TMPDIR=tmp (its temp root there)."""

    def __init__(self, tmp: Path, *args: str):
        config = tmp / "tiny.yaml"
        config.write_text(
            "model: {pretrained: tiny, device: cpu}\n"
            f"video: {{path: {SAMPLE}, num_frames: 2, height: 64, width: 64}}\n"
            "inversion: {steps: 2}\n"
        )
        self.tmp, self.port = tmp / "tmp", free_port()
        self.tmp.mkdir()
        self.out, self.err = tmp / "stdout", tmp / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vidinv", "app", "--config", str(config), "--port", str(self.port), *args],
                stdout=out,
                stderr=err,
                env={**os.environ, "TMPDIR": str(self.tmp)},
                cwd=REPO,
            )
        host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
        self.url = f"http://{host}:{self.port}/"
        deadline = time.monotonic() + 180
        while True:
            assert self.process.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, "vidinv app did not serve within 180 s"
            try:
                with urllib.request.urlopen(self.url, timeout=5) as page:
                    if page.status == 200:
                        break
            except OSError:
                time.sleep(0.5)

    def roots(self) -> list[str]:
        return [p.name for p in self.tmp.glob("vidinv-app-*")]

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def test_the_cli_app_listens_on_127_0_0_1_logs_one_line_per_refusal_and_sigterm_removes_its_temp_root(tmp_path):
    """By default `vidinv app` listens on 127.0.0.1 only. Its log holds one line per refused request,
    no traceback, no HTTP request lines (uvicorn's access log, httpx's). SIGTERM stops it with exit
    code 0 after it removed its temporary root (run folders and uploads), nothing more on stderr."""
    from gradio_client import Client, handle_file

    from vidinv.cli import build_parser

    assert build_parser().parse_args(["app"]).host == "127.0.0.1"
    server = CliServer(tmp_path)
    assert listening_addresses(server.port) == {"127.0.0.1"}
    assert len(server.roots()) == 1
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("not a video")
    client = Client(server.url, verbose=False)
    edited, _, _ = client.predict(handle_file(str(SAMPLE)), "a man riding a bike", "a robot", api_name="/edit")
    assert read_video(edited, size=None).frames.shape == (2, 3, 64, 64)
    refusals = [
        ((handle_file(str(SAMPLE)), "a", "b"), {"steps": 10**6}),  # gradio's range check
        ((handle_file(str(not_a_video)), "a", "b"), {}),  # vidinv's reading
        ((handle_file(str(SAMPLE)), "a", "b"), {"edit_method": "flowedit"}),  # not this model's
    ]
    for args, settings in refusals:
        with pytest.raises(Exception, match="steps|cannot be decoded|flowedit"):
            client.predict(*args, **settings, api_name="/edit")
    assert server.stop(signal.SIGTERM) == 0
    assert server.roots() == []
    err = server.err.read_text().splitlines()
    assert len(err) == len(refusals) and all(line.startswith("vidinv app: refused: ") for line in err), err
    out = server.out.read_text().splitlines()
    assert len(out) == 1 and out[0].startswith(f"vidinv: app on {server.url}"), out


def test_the_cli_app_listens_where_host_says_and_sigint_removes_its_temp_root(tmp_path):
    """--host 127.0.0.2 (a loopback address) is where it listens; Ctrl-C (SIGINT) stops it cleanly
    (exit code 0, nothing on stderr) and removes its temporary root."""
    server = CliServer(tmp_path, "--host", "127.0.0.2")
    assert listening_addresses(server.port) == {"127.0.0.2"}
    assert len(server.roots()) == 1
    assert server.stop(signal.SIGINT) == 0
    assert server.roots() == []
    assert server.err.read_text() == ""


def test_an_app_editor_removes_the_temp_root_it_made_when_python_exits(tmp_path):
    code = (
        "from vidinv.app import AppEditor; from vidinv.config import load_config; print(AppEditor(load_config()).root)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True
    )
    assert shown.returncode == 0 and Path(shown.stdout.strip()).parent == tmp_path, shown.stderr
    assert list(tmp_path.glob("vidinv-app-*")) == []
