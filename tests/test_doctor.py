"""`vidinv doctor`: the real command prints every row and exits 0 on this machine; a config whose plan
does not fit the free host memory exits 1 naming the plan's figure; a broken attention kernel is a
FAIL row of one line (no traceback); the encoder's byte-stability row runs for real and catches
x264's heap-reading AVX-512 kernel when it is let back in."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tests.heap_states
import vidinv.hostmemory
import vidinv.io.x264
from tests.conftest import REPO
from vidinv.attention.backends import KERNELS
from vidinv.cli import main
from vidinv.config import load_config
from vidinv.doctor import HEADER, MB, STATUSES, check_attention, check_encoder_stability, check_hub
from vidinv.planning import plan_run

ROW = re.compile(rf"^(.+?)\s{{2,}}({'|'.join(STATUSES)})\s+(.*)$")
ROWS_HERE = {
    "versions", "torch", "device cpu", "dtypes cpu", "attention xformers", "attention sdpa",
    "decoder decord", "decoder pyav", "encoder bytes", "hub", "hub cache",
}  # fmt: skip


def parse(out: str) -> dict[str, tuple[str, str]]:
    """{check name: (status, detail)} of a doctor's table (header and summary line left out)."""
    lines = out.strip().splitlines()
    assert lines[0] == HEADER and lines[-1].startswith("doctor: "), out
    rows = {}
    for line in lines[1:-1]:
        match = ROW.match(line)
        assert match, f"not a row: {line!r}"
        rows[match.group(1)] = (match.group(2), match.group(3))
    assert len(rows) == len(lines) - 2, "a check name printed twice"
    return rows


def test_the_command_prints_every_row_and_exits_0_within_a_minute():
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vidinv", "doctor"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stdout + done.stderr
    rows = parse(done.stdout)
    if not torch.cuda.is_available():
        assert set(rows) == ROWS_HERE
    assert ROWS_HERE <= set(rows) and all(status != "FAIL" for status, _ in rows.values())
    for name in ("torch", "device cpu", "dtypes cpu", "attention sdpa", "decoder pyav", "encoder bytes"):
        assert rows[name][0] == "ok", (name, rows[name])
    assert "fp16 ok" in rows["dtypes cpu"][1] and "bf16 ok" in rows["dtypes cpu"][1]
    assert "matches naive" in rows["attention sdpa"][1]
    # the byte-stability row ran: one md5 per format over every heap state, at a width x264's AVX-512 lanes overrun
    assert re.search(
        r"mp4 1 md5 \(\w{8}\); mkv 1 md5 \(\w{8}\) over 8 frames 144x176, 6 heap states", rows["encoder bytes"][1]
    )
    assert rows["hub"][0] in ("ok", "warn", "skip") and rows["hub cache"][0] in ("ok", "warn")
    assert "0 FAIL" in done.stdout.splitlines()[-1] and "Traceback" not in done.stderr
    assert seconds < 60


def test_a_config_whose_plan_does_not_fit_exits_1_naming_the_plans_figure(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    overrides = ["model.device=cpu", "video.num_frames=100000000"]  # TBs of host memory at 136x320
    assert main(["doctor", "configs/demo.yaml", *overrides]) == 1
    rows = parse(capsys.readouterr().out)
    plan = plan_run(load_config("configs/demo.yaml", overrides), "edit")
    status, detail = rows["plan edit"]
    assert status == "FAIL" and f"peak host memory {plan.host_peak / MB:,.0f} MB > " in detail, detail
    assert "MB available (100000000 frames at 136x320 on cpu)" in detail
    assert [name for name, (status, _) in rows.items() if status == "FAIL"] == ["plan edit"]


def softmax_over_queries(q, k, v, *, scale, mask=None):
    """A kernel with a real bug: it normalises the scores over the queries instead of the keys."""
    return (torch.einsum("bhqd,bhkd->bhqk", q, k) * scale).softmax(dim=-2) @ v


def unloaded_extension(q, k, v, *, scale, mask=None):
    """What an xformers wheel built for another torch does at its first call: its C++ operators
    never registered, so the lookup of one in torch.ops fails (a real AttributeError from torch)."""
    return torch.ops.xformers.efficient_attention_forward_cutlass(q, k, v, scale)


def test_a_broken_attention_kernel_is_a_fail_row_of_one_line(capsys, monkeypatch):
    """Kernels registered as plug-ins are checked against `naive` like the built-in ones."""
    monkeypatch.setitem(KERNELS, "wrong-axis", softmax_over_queries)
    monkeypatch.setitem(KERNELS, "no-extension", unloaded_extension)
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    rows = parse(captured.out)
    assert rows["attention sdpa"][0] == "ok"
    status, detail = rows["attention wrong-axis"]
    assert status == "FAIL" and detail.startswith("differs from naive: error "), detail
    status, detail = rows["attention no-extension"]
    assert status == "FAIL" and detail.startswith("raises on cpu: AttributeError: ") and "xformers" in detail
    assert "Traceback" not in captured.out + captured.err
    assert sorted(name for name, (status, _) in rows.items() if status == "FAIL") == [
        "attention no-extension",
        "attention wrong-axis",
    ]
    assert rows.keys() >= ROWS_HERE  # the other checks still ran


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_an_xformers_that_fails_at_its_first_call_is_a_fail_row():
    """The real xformers kernel, called where xformers cannot be imported: its first call raises
    (as a wheel built for another torch does) and the row names the error in one line."""
    row = check_attention("xformers", torch.device("cpu"))
    assert row.status == "FAIL" and row.detail.startswith("raises on cpu: ModuleNotFoundError: "), row
    assert row.detail.endswith("model.attention=auto runs on sdpa instead") and "\n" not in row.detail


def _has_avx512() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and " avx512f" in cpuinfo.read_text()


@pytest.mark.skipif(not _has_avx512(), reason="x264's heap-reading kernel is an AVX-512 one")
def test_the_byte_stability_row_fails_with_x264s_avx512_kernel_back_in(tmp_path, monkeypatch):
    """No pinned instruction sets (what the writer did before `vidinv.io.x264`): x264 takes its
    AVX-512 MB-tree kernel, which reads past the row's end at 176 px, and the row must see it.
    Measured here: 5-6 md5s over the 6 heap states in 3 of 3 fresh processes."""
    if vidinv.io.x264.x264_cpu_flags() is None:
        pytest.skip("this libx264 cannot be pinned: the writer runs unpinned already")
    monkeypatch.setattr(vidinv.io.x264, "x264_cpu_flags", lambda: None)
    row = check_encoder_stability(tmp_path)
    assert row.status == "FAIL" and row.detail.startswith("mp4: the bytes follow the heap's garbage"), row
    assert "mkv 1 md5" in row.detail  # FFV1 reads nothing it did not write


def test_the_heap_scrambler_is_the_packages_and_the_offline_hub_is_not_probed(monkeypatch):
    from huggingface_hub import constants

    assert tests.heap_states.scramble_heap is vidinv.hostmemory.scramble_heap
    assert vidinv.hostmemory.scramble_heap(0, blocks=4) is True  # glibc here
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert check_hub().status == "skip"


def test_doctor_is_a_listed_command_and_a_bad_config_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "doctor" in capsys.readouterr().out
    assert main(["doctor", str(REPO / "configs" / "demo.yaml"), "inversion.stepz=1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "inversion.steps" in captured.err
