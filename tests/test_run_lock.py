"""One run per output folder, with real processes: a second run into a folder in use exits 2 with
one line naming the folder and the holder's pid; a lock left by a killed run is taken over with
a note."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import REPO
from vidinv.run_lock import LOCK_NAME, acquire_run_lock, release_run_lock

HOLD = "import sys, time; from vidinv.run_lock import acquire_run_lock; acquire_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(120)"
ENCODE = ["video.num_frames=2", "video.height=32", "video.width=32"]


def vidinv(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vidinv", "--quiet", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_run_into_a_folder_in_use_exits_2_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = vidinv("encode", "configs/demo.yaml", *ENCODE, f"runtime.output_dir={out}")
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert str(out) in refused.stderr and f"pid {holder.pid}" in refused.stderr
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written by the refused run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)  # kill -9 left its lock file

    taken = vidinv("encode", "configs/demo.yaml", *ENCODE, f"runtime.output_dir={out}")
    assert taken.returncode == 0, taken.stderr
    assert taken.stderr.splitlines() == [
        f"vidinv: note: {out}: taking over the lock left by pid {holder.pid} (no longer running)"
    ]
    assert (out / "roundtrip.mp4").is_file() and not (out / LOCK_NAME).exists()  # released at the end


def test_the_lock_is_reentrant_within_a_process_and_released_on_request(tmp_path):
    lock = acquire_run_lock(tmp_path / "run")
    assert acquire_run_lock(tmp_path / "run") == lock and lock.read_text().strip() == str(os.getpid())
    release_run_lock(tmp_path / "run")
    assert not lock.exists()


def test_a_job_called_as_a_function_releases_its_lock_when_it_returns(tmp_path):
    """Batch items and app edits run many jobs in one process: each job gives its lock back."""
    from vidinv.config import load_config
    from vidinv.jobs import encode

    config = load_config(REPO / "configs/demo.yaml", [*ENCODE, f"runtime.output_dir={tmp_path / 'run'}"])
    encode.run(config, quiet=True)
    assert (tmp_path / "run" / "roundtrip.mp4").is_file() and not (tmp_path / "run" / LOCK_NAME).exists()
