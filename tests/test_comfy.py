"""The ComfyUI node pack (comfyui/vidinv_nodes, nodes in vidinv/comfy.py), tested against the
contract ComfyUI's custom-node loader and executor use, without ComfyUI: the pack imported from
its folder as the loader imports it, every node's INPUT_TYPES / RETURN_TYPES / FUNCTION, and the
graph Load Model -> Load Video -> Invert Clip -> Edit run as the executor runs nodes (a fresh
instance, FUNCTION called with the inputs by name, under torch.inference_mode) on the tiny
model, its frames those of `vidinv edit` with the same settings."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import vidinv
import vidinv.comfy
from tests.conftest import REPO, SAMPLE, SOURCE, TARGET, TINY_EDIT, cli_tiny_edit
from vidinv.errors import VidinvError
from vidinv.io import frames_to_uint8, read_video
from vidinv.io.writing import write_video

PACK = REPO / "comfyui" / "vidinv_nodes"
SETTINGS = TINY_EDIT
# ComfyUI's own types; the pack's own are the VIDINV_* handles
COMFY_TYPES = {"IMAGE", "MASK", "LATENT", "MODEL", "CLIP", "VAE", "CONDITIONING", "STRING", "INT", "FLOAT", "BOOLEAN"}
WIDGETS = {"STRING", "INT", "FLOAT", "BOOLEAN"}


def load_pack(folder: Path, module_name: str):
    """Import a node pack as ComfyUI's `load_custom_node` does: a spec from `<folder>/__init__.py`
    under `module_name`, the module put in sys.modules, then executed; returns the module."""
    spec = importlib.util.spec_from_file_location(
        module_name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    return module


def run_node(mappings: dict, name: str, **inputs):
    """A node run as ComfyUI's executor runs one: a new instance, FUNCTION called with the inputs
    by name (under inference mode); the outputs are a tuple of len(RETURN_TYPES)."""
    cls = mappings[name]
    with torch.inference_mode():
        outputs = getattr(cls(), cls.FUNCTION)(**inputs)
    assert isinstance(outputs, tuple) and len(outputs) == len(cls.RETURN_TYPES), name
    return outputs


@pytest.fixture(scope="module")
def nodes() -> dict:
    module = load_pack(PACK, str(PACK).replace(".", "_x_"))  # the module name ComfyUI gives a folder
    return module.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def cli_md5(tmp_path_factory) -> str:
    """edited.mp4's md5 from `vidinv edit` with SETTINGS."""
    return cli_tiny_edit(tmp_path_factory.mktemp("cli"))[1]


@pytest.fixture(scope="module")
def graph(nodes) -> dict:
    """Load Model -> Load Video -> Invert Clip with SETTINGS: the handles and the frames."""
    (model,) = run_node(
        nodes, "VidinvLoadModel", pretrained="tiny", dtype="auto", device="cpu", frame_attention="sparse_causal"
    )
    images, fps = run_node(nodes, "VidinvLoadVideo", path=str(SAMPLE), start=0, num_frames=3, stride=1)
    (record,) = run_node(
        nodes,
        "VidinvInvert",
        vidinv_model=model,
        images=images,
        source_prompt=SOURCE,
        method="freeinv",
        steps=2,
        seed=0,
        height=64,
        width=64,
        resize="center_crop",
    )
    return {"model": model, "images": images, "fps": fps, "record": record}


def edit(nodes, graph, prompt=TARGET, **inputs) -> torch.Tensor:
    values = dict(record=graph["record"], target_prompt=prompt, method="pnp", guidance_scale=7.5, seed=0)
    (images,) = run_node(nodes, "VidinvEdit", **{**values, **inputs})
    return images


def md5_of_image(images: torch.Tensor, fps: float, path: Path) -> str:
    """An IMAGE written by vidinv's writer (as `vidinv edit` writes edited.mp4)."""
    pictures = (images * 255).round().to(torch.uint8).numpy()
    return hashlib.md5(write_video(path, pictures, fps).read_bytes()).hexdigest()


@pytest.mark.parametrize("style", ["path", "folder name"])
def test_the_pack_loads_as_comfyui_loads_custom_nodes(style, tmp_path):
    """From the checkout and from a copy in a custom_nodes folder; the module named as ComfyUI
    names it now (the folder's path, dots as _x_) or as it did (the folder's name)."""
    copy = shutil.copytree(PACK, tmp_path / "custom_nodes" / PACK.name)
    for folder in (PACK, copy):
        module = load_pack(folder, str(folder).replace(".", "_x_") if style == "path" else folder.name)
        assert module.NODE_CLASS_MAPPINGS is vidinv.comfy.NODE_CLASS_MAPPINGS
        assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)
        assert set(module.__all__) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"}


def test_a_symlinked_pack_finds_its_checkout_when_vidinv_is_not_installed(tmp_path):
    """vidinv hidden from the import system until the checkout is on sys.path: the pack puts it there."""
    link = tmp_path / "custom_nodes" / "vidinv_nodes"
    link.parent.mkdir()
    link.symlink_to(PACK, target_is_directory=True)
    code = f"""
import importlib.abc, importlib.util, sys
CHECKOUT = {str(REPO)!r}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vidinv" and CHECKOUT not in sys.path:
            raise ModuleNotFoundError("No module named 'vidinv'", name="vidinv")
sys.meta_path.insert(0, Hide())
sys.path = [p for p in sys.path if p not in ("", CHECKOUT)]
spec = importlib.util.spec_from_file_location("vidinv_nodes", {str(link / "__init__.py")!r})
module = importlib.util.module_from_spec(spec)
sys.modules["vidinv_nodes"] = module
spec.loader.exec_module(module)
print(sorted(module.NODE_CLASS_MAPPINGS), sys.modules["vidinv"].__file__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "VidinvEdit" in done.stdout and str(REPO / "vidinv" / "__init__.py") in done.stdout


def test_every_node_follows_comfyuis_node_conventions(nodes):
    produced = {t for cls in nodes.values() for t in cls.RETURN_TYPES}
    for name, cls in nodes.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"], name
        inputs = {**spec["required"], **spec.get("optional", {})}
        for key, entry in inputs.items():
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, (name, key)
            kind, options = entry[0], entry[1] if len(entry) == 2 else {}
            if isinstance(kind, list):  # a combo: a list of choices
                assert kind and all(isinstance(c, str) for c in kind) and options.get("default", kind[0]) in kind
            else:
                assert isinstance(kind, str) and kind == kind.upper(), (name, key, kind)
                assert kind in COMFY_TYPES or kind in produced, f"{name}.{key}: no node makes {kind}"
            if kind in ("INT", "FLOAT"):
                assert options["min"] <= options["default"] <= options["max"], (name, key)
            if isinstance(kind, str) and kind in WIDGETS:
                assert "default" in options, (name, key)
        assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) and cls.CATEGORY == "vidinv"
        assert name in vidinv.comfy.NODE_DISPLAY_NAME_MAPPINGS
        # the function takes the inputs by name: the required ones without a default, the optional with one
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        assert list(params)[0] == "self" and set(params) - {"self"} == set(inputs), name
        for key in spec["required"]:
            assert params[key].default is inspect.Parameter.empty, (name, key)
        for key in spec.get("optional", {}):
            assert params[key].default is not inspect.Parameter.empty, (name, key)
        if hasattr(cls, "IS_CHANGED"):
            assert set(inspect.signature(cls.IS_CHANGED).parameters) == set(inputs), name
    assert nodes["VidinvEdit"].INPUT_TYPES()["optional"]["mask"][0] == "MASK"
    assert nodes["VidinvEdit"].RETURN_TYPES == ("IMAGE",)


def test_the_graph_gives_the_frames_of_vidinv_edit(nodes, graph, cli_md5, tmp_path):
    images = edit(nodes, graph)
    assert images.dtype == torch.float32 and images.shape == (3, 64, 64, 3)
    assert 0 <= images.min() and images.max() <= 1
    assert graph["fps"] == read_video(SAMPLE, num_frames=1).fps
    assert md5_of_image(images, graph["fps"], tmp_path / "comfy.mp4") == cli_md5
    # Load Video gives the decoded pictures, unresized, as ComfyUI image loaders do (k / 255)
    assert graph["images"].shape == (3, 136, 320, 3)
    pictures = (graph["images"] * 255).round()
    assert torch.equal(pictures / 255, graph["images"])


def test_one_record_feeds_several_edits_unchanged(nodes, graph):
    record = graph["record"]
    latents = record.record.latents.clone()
    first = edit(nodes, graph)
    other = edit(nodes, graph, "a bronze statue riding a bike", method="tokenflow", seed=3)
    assert not torch.equal(first, other)
    assert torch.equal(edit(nodes, graph), first)  # the record is reused, not changed
    assert torch.equal(record.record.latents, latents) and record.frames.shape == (3, 3, 64, 64)
    (reconstruction,) = run_node(nodes, "VidinvReconstruct", record=record)
    assert reconstruction.shape == (3, 64, 64, 3)


def test_the_mask_is_the_edits_mask(nodes, graph):
    """MASK is edit.mask: black everywhere gives the Reconstruct node's frames, white the unmasked
    edit's, bit for bit (docs/methods.md §8); a mask of another size is resized to the frames'."""
    edited = edit(nodes, graph)
    (reconstruction,) = run_node(nodes, "VidinvReconstruct", record=graph["record"])
    assert torch.equal(edit(nodes, graph, mask=torch.zeros(1, 64, 64)), reconstruction)
    assert torch.equal(edit(nodes, graph, mask=torch.ones(3, 64, 64)), edited)
    half = torch.zeros(3, 32, 32)
    half[:, :, 16:] = 1
    mixed = edit(nodes, graph, mask=half)
    assert not torch.equal(mixed, edited) and not torch.equal(mixed, reconstruction)
    with pytest.raises(VidinvError, match="mask"):
        edit(nodes, graph, mask=torch.ones(2, 64, 64))


def test_settings_lines_reach_the_config_and_bad_ones_are_one_line(nodes, graph):
    plain = edit(nodes, graph)
    tuned = edit(nodes, graph, settings="# PnP's feature injection off\nedit.pnp.inject_features = 0\n")
    assert not torch.equal(plain, tuned)
    with pytest.raises(VidinvError, match="did you mean"):
        edit(nodes, graph, settings="edit.guidance_scal=3")
    with pytest.raises(VidinvError, match="key=value"):
        edit(nodes, graph, settings="edit.seed 3")


def test_inside_comfyui_steps_move_the_progress_bar_and_cancel_stops_the_edit(nodes, graph, monkeypatch):
    """comfy.utils.ProgressBar and comfy.model_management faked as ComfyUI defines them."""
    bars, checks = [], []

    class ProgressBar:
        def __init__(self, total):
            self.total, self.done = total, 0
            bars.append(self)

        def update(self, value):
            self.done += value

    class InterruptProcessingException(Exception):
        pass

    def throw_exception_if_processing_interrupted():
        checks.append(1)
        if cancel:
            raise InterruptProcessingException()

    comfy = types.ModuleType("comfy")
    comfy.utils = types.SimpleNamespace(ProgressBar=ProgressBar)
    comfy.model_management = types.SimpleNamespace(
        throw_exception_if_processing_interrupted=throw_exception_if_processing_interrupted
    )
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", comfy.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", comfy.model_management)
    cancel = False
    edit(nodes, graph)
    assert [(bar.total, bar.done) for bar in bars] == [(2, 2)] and len(checks) == 2
    cancel = True
    with pytest.raises(InterruptProcessingException):
        edit(nodes, graph)


def test_load_video_reruns_when_the_file_changes(nodes, tmp_path):
    clip = shutil.copy(SAMPLE, tmp_path / "clip.mp4")
    before = nodes["VidinvLoadVideo"].IS_CHANGED(path=str(clip), start=0, num_frames=3, stride=1)
    os.utime(clip, ns=(0, 10**9))
    assert nodes["VidinvLoadVideo"].IS_CHANGED(path=str(clip), start=0, num_frames=3, stride=1) != before
    images, fps = run_node(nodes, "VidinvLoadVideo", path=str(clip), start=2, num_frames=2, stride=2)
    expected = read_video(SAMPLE, start=2, num_frames=2, stride=2, size=None)  # 136x320: nothing resampled
    np.testing.assert_array_equal((images * 255).round().to(torch.uint8).numpy(), frames_to_uint8(expected.frames))
    assert fps == expected.fps
    with pytest.raises(VidinvError, match="no such file"):
        run_node(nodes, "VidinvLoadVideo", path=str(tmp_path / "none.mp4"), start=0, num_frames=1, stride=1)


def test_the_pack_has_the_comfy_registry_metadata():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((PACK / "pyproject.toml").read_text(encoding="utf-8"))
    comfy = meta["tool"]["comfy"]
    assert set(comfy) >= {"PublisherId", "DisplayName", "Icon"} and comfy["PublisherId"] and comfy["DisplayName"]
    project = meta["project"]
    assert project["name"] == "vidinv-nodes" and project["version"] == vidinv.__version__
    assert project["description"] and any(dep.startswith("vidinv") for dep in project["dependencies"])
