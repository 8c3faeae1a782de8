"""The command line: help, info, and exit code 2 with one line on stderr for every bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vidinv.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "vidinv", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("info", "eval", "edit", "invert", "reconstruct", "encode"):
        assert command in out


def test_info_reports_library_versions_devices_and_backends(capsys):
    import torch

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert torch.__version__ in out
    for row in ("diffusers", "transformers", "devices", "video decoders", "attention backends"):
        assert row in out


def test_info_and_help_name_the_registered_methods(capsys):
    from vidinv.registry import EDIT_METHODS, INVERSION_METHODS

    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    edit_row = next(line for line in lines if line.startswith("edit methods"))
    inversion_row = next(line for line in lines if line.startswith("inversion methods"))
    assert edit_row.split(None, 2)[2].split(", ") == list(EDIT_METHODS.names())
    assert inversion_row.split(None, 2)[2].split(", ") == list(INVERSION_METHODS.names())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["encode", "configs/demo.yaml", "inversion.stepz=3"], "did you mean 'inversion.steps'"),
        (["encode", "no/such/config.yaml"], "does not exist"),
        (["encode", "configs/demo.yaml", "video.height=100"], "video.height"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_no_traceback(args, fragment):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vidinv: error:") and fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_the_traceback():
    result = run_cli("--debug", "encode", "no/such/config.yaml")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run_cli("transmogrify")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_encode_job_writes_videos_config_and_metrics(tmp_path, capsys):
    from vidinv.config import load_config
    from vidinv.io import read_video

    out = tmp_path / "run"
    args = [
        "video.num_frames=3",
        "video.height=64",
        "video.width=96",
        f"runtime.output_dir={out}",
        "runtime.vae_chunk=2",
    ]
    assert main(["--quiet", "encode", "configs/demo.yaml", *args]) == 0
    assert "encoded 3 frames 64x96" in capsys.readouterr().out
    for name in ("source.mp4", "roundtrip.mp4", "config.yaml", "metrics.json"):
        assert (out / name).is_file()
    assert not list(out.glob("*.partial*"))
    written = read_video(out / "roundtrip.mp4")
    assert written.frames.shape == (3, 3, 64, 96) and written.fps == 25.0
    assert load_config(out / "config.yaml") == load_config(REPO / "configs/demo.yaml", args)


def test_a_non_empty_output_dir_is_refused_without_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_cli("encode", "configs/demo.yaml", f"runtime.output_dir={tmp_path}")
    assert result.returncode == 2
    assert "not empty" in result.stderr and "runtime.overwrite=true" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_overwrite_leaves_no_output_of_an_earlier_command_beside_the_new_ones(tmp_path, capsys):
    """A folder never holds the results of two runs: `reconstruct`, `encode` and an edit in another
    codec, each with runtime.overwrite=true over an edit's folder, leave only their own outputs
    (the inversion record, reusable state, and files no command writes stay)."""
    out = tmp_path / "run"
    small = [
        "video.num_frames=2",
        "video.height=32",
        "video.width=32",
        "inversion.steps=2",
        f"runtime.output_dir={out}",
    ]
    assert main(["--quiet", "edit", "configs/demo.yaml", *small]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["--quiet", "reconstruct", "configs/demo.yaml", *small, "runtime.overwrite=true"]) == 0
    outputs = {"reconstruction.mp4", "metrics.json", "config.yaml", "inversion", "notes.txt"}
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == outputs
    assert main(["--quiet", "edit", "configs/demo.yaml", *small, "runtime.overwrite=true", "runtime.codec=ffv1"]) == 0
    outputs = {"edited.mkv", "source.mkv", "side_by_side.mkv", "metrics.json", "config.yaml", "inversion", "notes.txt"}
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == outputs
    assert main(["--quiet", "encode", "configs/demo.yaml", *small, "runtime.overwrite=true"]) == 0
    outputs = {"source.mp4", "roundtrip.mp4", "metrics.json", "config.yaml", "inversion", "notes.txt"}
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == outputs


def test_running_out_of_memory_is_one_line_naming_what_to_lower(tmp_path):
    """A real allocation failure mid-run (the process's address space capped just above what a tiny
    edit takes) ends in one line and exit 2, not a traceback."""
    import resource

    env = dict(os.environ, OMP_NUM_THREADS="1")
    small = ["video.num_frames=2", "video.height=32", "video.width=32", "inversion.steps=2"]
    probe = (
        "import sys; from vidinv.cli import main; main(sys.argv[1:]);"
        " print(next(l for l in open('/proc/self/status') if l.startswith('VmPeak:')).split()[1])"
    )
    argv = ["--quiet", "edit", "configs/demo.yaml", *small, f"runtime.output_dir={tmp_path}/small"]
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=REPO, env=env)
    limit = int(done.stdout.split()[-1]) * 1024 + 300 * 2**20  # a tiny edit's address space, and 300 MB

    def cap_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    big = ["video.num_frames=8", "video.height=2048", "video.width=2048", "inversion.steps=2"]  # 0.4 GB a chunk
    result = subprocess.run(
        [sys.executable, "-m", "vidinv", "--quiet", "edit", "configs/demo.yaml", *big, f"runtime.output_dir={tmp_path}/big"],
        capture_output=True, text=True, cwd=REPO, env=env, preexec_fn=cap_address_space,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("vidinv: error: out of memory on the host (tried to allocate ")
    assert result.stderr.count("\n") == 1 and "runtime.unet_chunk" in result.stderr
    assert not [*tmp_path.glob("big/*.mp4"), *tmp_path.glob("big/*.json")]  # nothing looking complete


@pytest.mark.parametrize("command", ["plan", "edit"])
def test_a_cuda_index_the_machine_lacks_is_one_line(command, monkeypatch, tmp_path, capsys):
    """model.device=cuda:1 on a one-GPU machine (torch.cuda stubbed to report one device): one line
    naming the devices there are, from the planner as from a run (was an AssertionError traceback)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    argv = [command, "configs/demo.yaml", "model.device=cuda:1"]
    assert main([*argv, *([f"runtime.output_dir={tmp_path}/run"] if command == "edit" else [])]) == 2
    err = capsys.readouterr().err
    assert err == "vidinv: error: model.device: 'cuda:1' asked for, but this machine has 1 CUDA device(s) (cuda:0)\n"
    assert not (tmp_path / "run").exists()


def test_a_run_is_planned_against_the_free_device_memory_not_the_cards_total(monkeypatch, tmp_path, capsys):
    """A 80 GB card with 10 MB free (other processes hold the rest; torch.cuda stubbed to say so):
    the tiny edit's predicted peak does not fit, one line names the free figure, before loading."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**20, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    argv = ["edit", "configs/demo.yaml", "model.device=cuda", f"runtime.output_dir={tmp_path}/run"]
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidinv: error: plan: predicted peak device memory ") and err.count("\n") == 1
    assert "exceeds the 10 MB free on cuda" in err
