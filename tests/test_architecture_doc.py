"""docs/architecture.md's worked examples run as written: the plug-in modules, their use through
`VideoEditor`, and their discovery through entry points by the CLI (in fresh processes, so the
registries of this test session are left alone)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vidinv.config import load_config
from vidinv.editing import EditMethod, register_edit_method
from vidinv.planning import frame_calls
from vidinv.registry import EDIT_METHODS

DOC = REPO / "docs" / "architecture.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def plugin_modules() -> dict[str, str]:
    """The python blocks that open with `# name.py`: file name -> source."""
    return {m.group(1): block for block in code_blocks("python") if (m := re.match(r"# (\w+\.py)\n", block))}


@pytest.fixture
def plugin_dir(tmp_path):
    """A folder holding the doc's plug-in modules."""
    for name, source in plugin_modules().items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    return tmp_path


def run_python(args: list[str], plugin_dir) -> subprocess.CompletedProcess:
    """python ARGS in the repository root, the plug-in folder and this checkout first on sys.path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)])}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_doc_has_both_plugin_modules_their_use_a_model_family_and_entry_points():
    assert set(plugin_modules()) == {"my_inversion.py", "my_edit.py"}
    assert len(code_blocks("python")) == 4 and len(code_blocks("toml")) == 1


def test_the_usage_examples_run_as_written(plugin_dir):
    """The blocks that are not plug-in modules, in order, as one script."""
    script = "\n".join(block for block in code_blocks("python") if not re.match(r"# \w+\.py\n", block))
    result = run_python(["-c", script], plugin_dir)
    assert result.returncode == 0, result.stderr[-3000:]


def entry_point_distribution(folder, toml_text: str) -> dict[str, dict[str, str]]:
    """An installed-looking distribution (dist-info with entry_points.txt) in `folder` declaring the
    entry points of the doc's pyproject block; returns them (group -> name -> target)."""
    import tomllib

    groups = tomllib.loads(toml_text)["project"]["entry-points"]
    info = folder / "vidinv_doc_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vidinv-doc-plugins\nVersion: 0.1\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in names.items()) for group, names in groups.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return groups


def test_entry_points_make_the_plugins_known_to_vidinv_info_and_the_edit_command(plugin_dir, tmp_path):
    (toml_text,) = code_blocks("toml")
    groups = entry_point_distribution(plugin_dir, toml_text)
    assert set(groups) == {"vidinv.inversion_methods", "vidinv.edit_methods"}

    info = run_python(["-m", "vidinv", "info"], plugin_dir)
    assert info.returncode == 0, info.stderr[-3000:]
    rows = dict(line.split("  ", 1) for line in info.stdout.splitlines() if "  " in line)
    assert "alternating_flip" in rows["inversion methods"] and "prompt_swap" in rows["edit methods"]

    out = tmp_path / "run"
    args = ["inversion.method=alternating_flip", "edit.method=prompt_swap", "inversion.steps=2", "video.num_frames=2"]
    args += ["video.height=64", "video.width=64", f"runtime.output_dir={out}"]
    edit = run_python(["-m", "vidinv", "--quiet", "edit", "configs/demo.yaml", *args], plugin_dir)
    assert edit.returncode == 0, edit.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inversion"]["method"] == "alternating_flip" and metrics["edit"]["method"] == "prompt_swap"
    assert metrics["frame_calls"]["edit"] == 2 * 2 * 2  # frames x (uncond, cond) x steps
    assert (out / "edited.mp4").is_file()


class Unpredicted(EditMethod):
    """An edit method that makes no frame-call prediction."""


class Predicted(EditMethod):
    @classmethod
    def predicted_frame_calls(cls, config, frames, latent_hw, **context):
        return 1000 * frames + config.inversion.steps


@pytest.fixture
def registered():
    """register(name, cls) for the duration of one test."""
    names = []

    def register(name, cls):
        register_edit_method(name, cls)
        names.append(name)

    yield register
    for name in names:
        EDIT_METHODS.unregister(name)


def test_the_plan_asks_a_plugin_edit_method_for_its_frame_calls(registered):
    registered("test_predicted", Predicted)
    registered("test_unpredicted", Unpredicted)
    config = load_config(REPO / "configs/demo.yaml", ["inversion.steps=3", "edit.method=test_predicted"])
    assert frame_calls(config, "edit", 2, (8, 8))["edit"] == 2003
    config.edit.method = "test_unpredicted"
    assert "edit" not in frame_calls(config, "edit", 2, (8, 8))
