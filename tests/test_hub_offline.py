"""A hub id when the hub cannot be reached: one line within seconds when the model is not cached
(not minutes of retries), and a run from the hub cache with a one-line note when it is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.conftest import REPO

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there
COMMIT = "0" * 40
SMALL = ["video.num_frames=1", "video.height=32", "video.width=32", "inversion.steps=1"]


def vidinv_offline(hf_home, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`vidinv ARGS` with an empty-or-prepared hub cache and an unreachable hub; (result, seconds)."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_ENDPOINT": UNREACHABLE, "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vidinv", "--quiet", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.perf_counter() - started


def test_an_uncached_hub_id_with_the_hub_unreachable_fails_in_seconds_with_one_line(tmp_path):
    out = tmp_path / "run"
    args = ["edit", "configs/demo.yaml", *SMALL, "model.pretrained=someone/no-such-model", f"runtime.output_dir={out}"]
    done, seconds = vidinv_offline(tmp_path / "hf", *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "someone/no-such-model" in done.stderr and "HF_HUB_OFFLINE=1" in done.stderr
    assert "local diffusers folder" in done.stderr
    assert seconds < 30  # a generous bound (imports included); the hub's own retries took minutes
    assert not out.exists()


def test_a_cached_hub_id_runs_from_the_cache_with_one_note_when_the_hub_is_unreachable(tmp_path, tiny_models):
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-sd"
    tiny_models.save_pretrained(repo / "snapshots" / COMMIT)  # the hub cache's layout
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    out = tmp_path / "run"
    args = ["invert", "configs/demo.yaml", *SMALL, "model.pretrained=someone/tiny-sd", f"runtime.output_dir={out}"]
    done, _ = vidinv_offline(tmp_path / "hf", *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"vidinv: note: the hub {UNREACHABLE} cannot be reached (ConnectError); loading 'someone/tiny-sd' from the hub cache"
    ]
    assert (out / "inversion" / "record.json").is_file()
