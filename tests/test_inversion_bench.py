"""scripts/bench_inversion.py runs end to end on a tiny setting and writes its JSON."""

from __future__ import annotations

import importlib.util
import json

import torch

from tests.conftest import REPO


def test_bench_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_inversion", REPO / "scripts" / "bench_inversion.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = torch.get_num_threads()
    try:
        out = tmp_path / "bench.json"
        args = ["--frames", "2", "--steps", "3", "--methods", "ddim", "freeinv:flips", "ddpm_ef:shared"]
        assert bench.main([*args, "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["ddim", "freeinv:flips", "ddpm_ef:shared"]
    assert rows[1]["unet_calls"] == rows[0]["unet_calls"] == 2 * 3 * 2
    assert rows[2]["psnr_db_mean"] > 60 and "edit_temporal_ratio" in rows[2]
    assert "xDDIM" in capsys.readouterr().out
