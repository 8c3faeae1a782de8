"""Ctrl-C and kill -9 with real processes and real signals: the first SIGINT finishes the step,
keeps what a rerun needs and exits 130 with one line; a second exits at once; rerunning the same
command gives records, edited latents and video files bit-identical to an uninterrupted run's."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_reproducible import videos_md5
from vidinv import interrupts
from vidinv.cli import main
from vidinv.inversion.record import JSON_NAME, InversionRecord
from vidinv.inversion.resume import SUFFIX, steps_done

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "demo.yaml")
STEPS = 40  # enough steps that the run is still inverting when the signal lands
CLIP = ["video.num_frames=2", "video.height=64", "video.width=64", f"inversion.steps={STEPS}"]
RESUME_HINT = "checkpoint saved — rerun the same command to resume"


class Run:
    """`python -m vidinv ARGS` in a subprocess (the test's thread count), stderr collected as it comes."""

    def __init__(self, *args: str, quiet: bool = True):
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        command = [sys.executable, "-m", "vidinv", *(["--quiet"] if quiet else []), *args]
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            self._chunks.append(chunk)

    @property
    def stderr(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_until(self, ready, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"vidinv exited ({self.proc.returncode}) before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {what} within {timeout}s:\n{self.stderr}")
            time.sleep(0.005)

    def wait_for_progress(self, desc: str) -> None:
        """Until the progress bar `desc` shows a finished step (the run is in that loop)."""
        bar = re.compile(rf"{desc}:\s+\d+%\|[^|\r\n]*\|\s*[1-9]\d*/")
        self.wait_until(lambda: bar.search(self.stderr), f"a finished {desc} step")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def last_line(self) -> str:
        """The last line of stderr (progress bars redraw with \\r), checked to be its only `interrupted` line."""
        lines = [line.strip() for line in re.split(r"[\r\n]", self.stderr) if line.strip()]
        assert sum("interrupted" in line for line in lines) == 1, self.stderr
        return lines[-1]


def checkpoint_of(out: Path) -> Path:
    return out / ("inversion" + SUFFIX)


def checkpointed_steps(checkpoint: Path) -> int:
    """Steps in the checkpoint as it is on disk now (0 while there is none; saves replace it atomically)."""
    try:
        return steps_done(load_file(str(checkpoint)))
    except (FileNotFoundError, RuntimeError):  # safetensors reports a missing file as a RuntimeError
        if checkpoint.is_file():
            raise
        return 0


def step_of(line: str, stage: str, detail: str, total: int = STEPS) -> int:
    """k in 'vidinv: interrupted at STAGE step k of TOTAL; DETAIL' (the whole line must match), 0 < k < TOTAL."""
    match = re.fullmatch(rf"vidinv: interrupted at {stage} step (\d+) of {total}; {re.escape(detail)}", line)
    assert match, line
    assert 0 < int(match.group(1)) < total
    return int(match.group(1))


def in_process(command: str, out: Path, *args: str) -> int:
    """The same command in this process (the uninterrupted reference, or the rerun that resumes)."""
    return main(["--quiet", command, CONFIG, *args, f"runtime.output_dir={out}"])


def assert_same_record(folder: Path, reference: Path) -> InversionRecord:
    record, expected = InversionRecord.load(folder), InversionRecord.load(reference)
    assert torch.equal(record.latents, expected.latents)
    assert (record.noise_maps is None) == (expected.noise_maps is None)
    if expected.noise_maps is not None:
        assert torch.equal(record.noise_maps, expected.noise_maps)
    return record


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the demo config's clip path is relative to the repository


# -- the mechanism, in this process with real signals --------------------------------------------


def test_a_first_sigint_inside_deferred_only_sets_the_flag_and_a_second_raises_at_once():
    with pytest.raises(KeyboardInterrupt) as raised:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupts.requested()
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second SIGINT did not interrupt")
    assert not isinstance(raised.value, interrupts.Interrupted)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not interrupts.requested()


def test_a_sigint_no_step_boundary_took_is_raised_when_the_loop_ends():
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_deferred_a_sigint_is_a_keyboard_interrupt_at_once():
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)


# -- the command line, in subprocesses ------------------------------------------------------------


# One inversion method per test keeps the subprocesses few (each costs seconds of imports): FreeInv
# here, MBDI and DDPM-EF below; tests/test_inversion_resume.py resumes every method in-process.


def test_a_first_sigint_in_the_first_minute_saves_the_checkpoint_and_the_rerun_gives_the_bit_identical_record(
    tmp_path,
):
    method = "freeinv"
    args = [*CLIP, f"inversion.method={method}"]  # runtime.checkpoint_seconds: the default 60
    assert in_process("invert", tmp_path / "whole", *args) == 0

    out = tmp_path / "run"
    run = Run("invert", CONFIG, *args, f"runtime.output_dir={out}", quiet=False)
    run.wait_for_progress(f"{method} inversion")
    run.send(signal.SIGINT)
    assert run.finish() == 130
    k = step_of(run.last_line(), "inversion", RESUME_HINT)
    assert steps_done(load_file(str(checkpoint_of(out)))) == k
    assert not (out / "inversion" / JSON_NAME).exists()

    assert in_process("invert", out, *args) == 0
    record = assert_same_record(out / "inversion", tmp_path / "whole" / "inversion")
    assert record.stats.resumed_from_step == k
    assert not checkpoint_of(out).exists()


def test_a_sigint_then_a_kill_9_after_a_periodic_checkpoint_still_resume_to_the_bit_identical_record(tmp_path):
    args = [*CLIP, "inversion.method=mbdi", "runtime.checkpoint_seconds=0"]
    assert in_process("invert", tmp_path / "whole", *args) == 0
    out = tmp_path / "run"
    checkpoint = checkpoint_of(out)

    first = Run("invert", CONFIG, *args, f"runtime.output_dir={out}")
    first.wait_until(checkpoint.is_file, "a checkpoint")
    first.send(signal.SIGINT)
    assert first.finish() == 130
    k = step_of(first.stderr.rstrip("\n"), "inversion", RESUME_HINT)  # the whole of stderr: one line
    assert first.stderr.count("\n") == 1

    second = Run("invert", CONFIG, *args, f"runtime.output_dir={out}")  # resumes, checkpoints every step
    second.wait_until(lambda: k < checkpointed_steps(checkpoint) < STEPS, f"a periodic checkpoint past step {k}")
    second.send(signal.SIGKILL)
    assert second.finish() == -signal.SIGKILL
    assert k < steps_done(load_file(str(checkpoint))) < STEPS
    assert not (out / "inversion" / JSON_NAME).exists()

    assert in_process("invert", out, *args) == 0
    record = assert_same_record(out / "inversion", tmp_path / "whole" / "inversion")
    assert record.stats.resumed_from_step > k


def test_a_second_sigint_exits_at_once_without_finishing_the_step(tmp_path):
    out = tmp_path / "run"
    checkpoint = checkpoint_of(out)
    # MBDI at 256x256: about a second per step, so both signals land inside one step
    args = ["video.num_frames=2", "video.height=256", "video.width=256", "inversion.steps=10"]
    args += ["inversion.method=mbdi", "runtime.checkpoint_seconds=0", f"runtime.output_dir={out}"]
    run = Run("invert", CONFIG, *args)
    run.wait_until(checkpoint.is_file, "a checkpoint")  # step 1 just ended: step 2 is running
    before = steps_done(load_file(str(checkpoint)))
    run.send(signal.SIGINT)
    time.sleep(0.05)  # two signals apart, so the process sees both
    run.send(signal.SIGINT)
    assert run.finish() == 130
    assert run.stderr == "vidinv: interrupted\n"
    assert steps_done(load_file(str(checkpoint))) == before  # the step was not finished and saved
    assert not (out / "inversion" / JSON_NAME).exists()


def test_sigints_during_the_inversion_and_then_the_edit_rerun_to_the_bit_identical_record_and_edit(
    tmp_path, monkeypatch
):
    from vidinv.editor import VideoEditor

    edited = {}
    real = VideoEditor.edit_latents

    def keep_latents(self, *a, **k):
        result = real(self, *a, **k)
        edited[str(self.config.runtime.output_dir)] = result.latents
        return result

    monkeypatch.setattr(VideoEditor, "edit_latents", keep_latents)
    args = [*CLIP, "inversion.method=ddpm_ef", "edit.method=pnp", "runtime.checkpoint_seconds=0"]
    whole, out = tmp_path / "whole", tmp_path / "run"
    assert in_process("edit", whole, *args) == 0

    during_inversion = Run("edit", CONFIG, *args, f"runtime.output_dir={out}", quiet=False)
    during_inversion.wait_for_progress("ddpm_ef inversion")
    during_inversion.send(signal.SIGINT)
    assert during_inversion.finish() == 130
    k = step_of(during_inversion.last_line(), "inversion", RESUME_HINT)

    during_edit = Run("edit", CONFIG, *args, f"runtime.output_dir={out}", quiet=False)
    during_edit.wait_for_progress("edit")
    during_edit.send(signal.SIGINT)
    assert during_edit.finish() == 130
    kept = f"the inversion record in {out / 'inversion'} is kept — rerun the same command to reuse it"
    step_of(during_edit.last_line(), "edit", kept, total=STEPS - round(0.36 * STEPS))  # DDPM-EF skips T_skip
    assert not (out / "edited.mp4").exists()
    assert not (out / "source.mp4").exists()  # written during the encode pass, renamed only at the end
    record = assert_same_record(out / "inversion", whole / "inversion")
    assert record.stats.resumed_from_step == k

    assert in_process("edit", out, *args) == 0
    assert torch.equal(edited[str(out)], edited[str(whole)])
    assert '"record_reused": true' in (out / "metrics.json").read_text()
    assert videos_md5(out) == videos_md5(whole)  # the files too, written by processes of other histories

    killed = tmp_path / "killed"  # kill -9 after a periodic checkpoint of the inversion, then resumed
    run = Run("edit", CONFIG, *args, f"runtime.output_dir={killed}")
    run.wait_until(lambda: checkpointed_steps(checkpoint_of(killed)) > 0, "a periodic checkpoint")
    run.send(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert in_process("edit", killed, *args) == 0
    assert videos_md5(killed) == videos_md5(whole)
