"""`vidinv app`: one Gradio server on the tiny model, driven by gradio_client (/edit) and by a real
headless browser (Debian's chromium through Playwright), which saves a screenshot of the page
(to $VIDINV_APP_SCREENSHOT, default a tmp file)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

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
    """The app on the tiny model (2 frames, 64x64, 2 steps by default), on a loopback port."""
    from vidinv.app import allowed_paths, build_app

    app = build_app(load_config(REPO / "configs" / "demo.yaml", TINY), root=tmp_path_factory.mktemp("app-runs"))
    port = free_port()
    app.queue().launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=allowed_paths(app),
    )
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_edit_endpoint_returns_a_decodable_edited_video_a_side_by_side_and_metrics(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    edited, side_by_side, metrics = client.predict(
        handle_file(str(SAMPLE)), "a man riding a bike", "a robot riding a bike", api_name="/edit"
    )
    assert read_video(edited, size=None).frames.shape == (2, 3, 64, 64)
    assert read_video(side_by_side, size=None).frames.shape == (2, 3, 64, 128)
    metrics = metrics if isinstance(metrics, dict) else json.loads(metrics)
    assert metrics["target_prompt"] == "a robot riding a bike" and metrics["frame_calls"]["edit"] > 0
    assert (Path(metrics["output_dir"]) / "config.yaml").is_file()  # the edit job's own run folder


def test_a_bad_setting_on_the_endpoint_is_a_one_line_error(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
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
        page.goto(server)
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
