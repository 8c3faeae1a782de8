"""Every bad input through the real command line: exit 2, exactly one line on stderr (no traceback,
no ffmpeg or decord log lines), nothing written; warnings that do not stop a run are one line.

Each case runs in a process of its own (`tests.forked_cli`), its whole stderr captured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.forked_cli import ForkedCli
from vidinv.outputs import write_json

SMALL = ["video.num_frames=2", "video.height=32", "video.width=32", "inversion.steps=2"]


@pytest.fixture(scope="module")
def cli():
    driver = ForkedCli()
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory) -> dict[str, Path]:
    """Files that are not videos: empty, text, a truncated mp4, a 0-frame mkv, a still image."""
    folder = tmp_path_factory.mktemp("broken")
    files = {name: folder / name for name in ("empty.mp4", "text.mp4", "truncated.mp4", "no_frames.mkv", "still.png")}
    files["empty.mp4"].write_bytes(b"")
    files["text.mp4"].write_text("not a video\n" * 50)
    sample = (REPO / "samples" / "bikes.mp4").read_bytes()
    files["truncated.mp4"].write_bytes(sample[: len(sample) // 3])
    with av.open(str(files["no_frames.mkv"]), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "bgr0"
        container.start_encoding()  # the header, then no frame
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(files["still.png"])
    return files


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, broken_files, cli):
    out = tmp_path  # each case's run folder: OUT/<case>
    edit = ["--quiet", "edit", "configs/demo.yaml"]
    cases = {  # case -> (argv, words the line must hold)
        "output under /proc": ([*edit, *SMALL, "runtime.output_dir=/proc/vidinv-test/run"], "/proc/vidinv-test/run"),
        "output under /sys": ([*edit, *SMALL, "runtime.output_dir=/sys/vidinv-test"], "/sys/vidinv-test"),
        "eval --json unwritable": (
            ["eval", "samples/bikes.mp4", "samples/bikes.mp4", "--json", "/proc/m.json"],
            "/proc/m.json",
        ),
        "height beyond the bound": ([*edit, "video.height=100000", f"runtime.output_dir={out}/h"], "video.height"),
        "non-finite guidance": (
            [*edit, *SMALL, "edit.guidance_scale=inf", f"runtime.output_dir={out}/g"],
            "edit.guidance_scale",
        ),
        "nan guidance": (
            [*edit, *SMALL, "inversion.guidance_scale=nan", f"runtime.output_dir={out}/n"],
            "inversion.guidance_scale",
        ),
        "duplicated key": (
            [*edit, "inversion.steps=3", "inversion.steps=4", f"runtime.output_dir={out}/d"],
            "'inversion.steps' is given twice",
        ),
        "blend word not in the prompt": (
            [*edit, *SMALL, "edit.method=fatezero", "edit.fatezero.blend_words=[zebra]", f"runtime.output_dir={out}/f"],
            "'zebra' is not in the source prompt",
        ),
        "size past SD3's positional embedding": (  # the shipped config's 576x1024 on the tiny SD3 (16 tokens a side)
            ["edit", "configs/sd3_flowedit.yaml", "model.pretrained=tiny-sd3", f"runtime.output_dir={out}/sd3"],
            "video.height: 576 is 36 tokens of 16 px, more than the sd3 transformer's positional embedding holds"
            " (16 a side); use a multiple of 16 up to 256",
        ),
        "plan of that size": (["plan", "configs/sd3_edit.yaml", "model.pretrained=tiny-sd3"], "up to 256"),
        "a device vidinv does not run on": (
            [*edit, *SMALL, "model.device=meta", f"runtime.output_dir={out}/meta"],
            "model.device: 'meta' is not a device vidinv runs on (use auto, cpu, cuda, cuda:N, mps or xpu)",
        ),
        "mps absent": ([*edit, *SMALL, "model.device=mps", f"runtime.output_dir={out}/mps"], "MPS is not available"),
        "xpu absent": ([*edit, *SMALL, "model.device=xpu", f"runtime.output_dir={out}/xpu"], "XPU is not available"),
        "size not whole SD3 tokens": (
            [*edit, "model.pretrained=tiny-sd3", "video.height=32", "video.width=40", f"runtime.output_dir={out}/w"],
            "video.width: 40 is not a multiple of 16",
        ),
    }
    for name, path in broken_files.items():
        cases[name] = ([*edit, *SMALL, f"video.path={path}", f"runtime.output_dir={out}/{name}"], str(path))
    results = [cli.run(argv) for argv, _ in cases.values()]
    for (name, (_, words)), (code, stderr) in zip(cases.items(), results):
        assert code == 2, (name, stderr)
        assert stderr.startswith("vidinv: error: ") and stderr.count("\n") == 1, (name, stderr)
        assert words in stderr, (name, stderr)
    assert list(out.iterdir()) == []  # no run folder left behind, not even an empty one
    assert "is an image" in results[list(cases).index("still.png")][1]


def test_too_few_frames_and_a_long_prompt_are_one_line_notes_and_the_run_goes_on(tmp_path, cli):
    long_prompt = " ".join(["a red car on a wet street"] * 30)
    cases = [
        [
            "--quiet",
            "encode",
            "configs/demo.yaml",
            "video.height=32",
            "video.width=32",
            "video.num_frames=500",
            "video.stride=50",
            f"runtime.output_dir={tmp_path}/frames",
        ],
        [
            "--quiet",
            "invert",
            "configs/demo.yaml",
            *SMALL[:3],
            "inversion.steps=1",
            f"inversion.source_prompt={long_prompt}",
            f"runtime.output_dir={tmp_path}/prompt",
        ],
    ]
    (frames_code, frames_note), (prompt_code, prompt_note) = (cli.run(argv) for argv in cases)
    assert frames_code == 0 and frames_note.count("\n") == 1, frames_note
    assert "num_frames=500" in frames_note and "stride 50" in frames_note and "using 1" in frames_note
    assert prompt_code == 0 and prompt_note.count("\n") == 1, prompt_note  # once, though encoded twice
    assert "cut to the text encoder's 75" in prompt_note and "dropped" in prompt_note


def test_json_files_are_strict_non_finite_numbers_become_null(tmp_path):
    path = write_json(tmp_path / "m.json", {"psnr": math.inf, "warp": [1.5, math.nan], "nested": {"x": -math.inf}})

    def refuse(constant):
        raise ValueError(f"{constant} in a JSON file")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "psnr": None,
        "warp": [1.5, None],
        "nested": {"x": None},
    }
