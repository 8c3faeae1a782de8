"""A plug-in edit method installed from outside the package (a distribution with an entry point in
the group `vidinv.edit_methods`, found on PYTHONPATH as pip would install it) declares its own
config section: `vidinv edit ... edit.method=NAME edit.NAME.KEY=VALUE` reads it, `vidinv plan`
predicts the edit's frame-calls from it (equal to the run's count), and a misspelt key of the
section is a one-line did-you-mean error."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess
REPO = Path(__file__).resolve().parents[1]
PLUGIN = '''
from dataclasses import dataclass, replace

from vidinv.editing.pnp import PnPEdit


@dataclass
class OnlyAttentionSettings:
    """Attention injection only (edit.only_attention)."""

    fraction: float = 0.5  # fraction of steps with self-attention injection

    def check(self, prefix):
        from vidinv.config import require_fractions

        require_fractions(self, prefix, ("fraction",))


class OnlyAttentionEdit(PnPEdit):
    name = "only_attention"
    settings = OnlyAttentionSettings

    @staticmethod
    def as_pnp(config):
        own = config.edit.only_attention
        pnp = replace(config.edit.pnp, inject_features=0.0, inject_attention=own.fraction)
        return replace(config, edit=replace(config.edit, pnp=pnp))

    def __init__(self, models, config):
        super().__init__(models, self.as_pnp(config))

    @classmethod
    def predicted_frame_calls(cls, config, frames, latent_hw, **context):
        return super().predicted_frame_calls(cls.as_pnp(config), frames, latent_hw, **context)
'''
SMALL = ["video.num_frames=2", "video.height=32", "video.width=32", "inversion.steps=4", "edit.guidance_scale=7.5"]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "only_attention_plugin.py").write_text(PLUGIN)
    info = root / "only_attention_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: only-attention-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[vidinv.edit_methods]\nonly_attention = only_attention_plugin:OnlyAttentionEdit\n"
    )
    return root


def vidinv(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    command = [sys.executable, "-m", "vidinv", "--quiet", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def planned_edit_calls(plugin_path: Path, fraction: float) -> int:
    done = vidinv(
        plugin_path,
        "plan",
        "configs/demo.yaml",
        *SMALL,
        "edit.method=only_attention",
        f"edit.only_attention.fraction={fraction}",
    )
    assert done.returncode == 0, done.stderr
    return int(re.search(r"edit ([\d,]+)", done.stdout).group(1).replace(",", ""))


@pytest.mark.slow
def test_the_plugins_section_drives_the_run_and_the_plan(plugin_path, tmp_path):
    out = tmp_path / "run"
    done = vidinv(
        plugin_path, "edit", "configs/demo.yaml", *SMALL, "edit.method=only_attention",
        "edit.only_attention.fraction=0.25", f"runtime.output_dir={out}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    counted = json.loads((out / "metrics.json").read_text())["frame_calls"]["edit"]
    assert counted == planned_edit_calls(plugin_path, 0.25)
    assert planned_edit_calls(plugin_path, 1.0) > counted  # the setting is read: more injected steps
    assert "fraction: 0.25" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_a_misspelt_key_of_the_plugins_section_is_one_line(plugin_path):
    done = vidinv(
        plugin_path, "plan", "configs/demo.yaml", "edit.method=only_attention", "edit.only_attention.fractoin=0.3"
    )
    assert done.returncode == 2
    message = done.stderr.strip()
    assert "\n" not in message and "did you mean 'edit.only_attention.fraction'" in message
    done = vidinv(
        plugin_path, "plan", "configs/demo.yaml", "edit.method=only_attention", "edit.only_attention.fraction=2"
    )
    assert (
        done.returncode == 2 and "'edit.only_attention.fraction' is 2.0, expected a fraction in [0, 1]" in done.stderr
    )
