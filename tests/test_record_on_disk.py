"""The inversion record on disk (`runtime.record: disk`): the file written step by step has the
bytes `safetensors` writes for the tensors in memory, steps read back are the tensors' own, and
every inversion and edit gives bit-identical results with the record on disk or in memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vidinv.cli import main
from vidinv.config import config_from_dict
from vidinv.errors import VidinvError
from vidinv.inversion import api
from vidinv.inversion.methods import SeededNoise, ef_noise
from vidinv.inversion.record import TENSORS_NAME, InversionRecord, keeps_on_disk, record_bytes
from vidinv.inversion.samplers import EditFriendlyDDPMSampler
from vidinv.inversion.step_file import create, open_tensors, write_tensors

REPO = Path(__file__).resolve().parents[1]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tensors(seed=0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(5, 3, 4, 2, 6, generator=generator),
        "noise_maps": torch.randn(4, 3, 4, 2, 6, generator=generator),
    }


def test_a_file_written_step_by_step_in_any_order_has_the_bytes_save_file_writes(tmp_path):
    expected = tensors()
    save_file(expected, str(tmp_path / "whole.safetensors"), metadata={"fingerprint": "abc"})
    specs = {name: (t.dtype, tuple(t.shape)) for name, t in expected.items()}
    files = create(tmp_path / "steps.safetensors", specs, {"fingerprint": "abc"})
    for i in reversed(range(5)):  # the DDIM inversion's order: x0 first, z_T last
        files["latents"][i] = expected["latents"][i]
    for i in range(4):  # DDPM-EF's: step by step from z_T
        files["noise_maps"][i] = expected["noise_maps"][i]
    del files
    assert md5(tmp_path / "steps.safetensors") == md5(tmp_path / "whole.safetensors")
    write_tensors(tmp_path / "saved.safetensors", expected, {"fingerprint": "abc"})  # a record in memory's save
    assert md5(tmp_path / "saved.safetensors") == md5(tmp_path / "whole.safetensors")


def test_steps_frame_runs_and_views_read_back_the_tensors_values(tmp_path):
    expected = tensors(1)
    save_file(expected, str(tmp_path / "t.safetensors"))
    files = open_tensors(tmp_path / "t.safetensors")
    latents = files["latents"]
    assert latents.shape == expected["latents"].shape and latents.dtype == torch.float32
    assert torch.equal(latents.tensor(), expected["latents"])
    assert torch.equal(latents[-1], expected["latents"][-1]) and torch.equal(latents[0], expected["latents"][0])
    assert torch.equal(latents[2, 1:3], expected["latents"][2, 1:3])
    tail = latents[3:]
    assert len(tail) == 2 and torch.equal(tail[1], expected["latents"][4]) and tail.position_in(latents) == 3
    assert torch.equal(files["noise_maps"][:2].tensor(), expected["noise_maps"][:2])
    with pytest.raises(IndexError):
        latents[5]
    with pytest.raises(IndexError):
        latents[0, ::2]


def test_a_step_of_the_wrong_shape_is_refused(tmp_path):
    files = create(tmp_path / "t.safetensors", {"latents": (torch.float32, (3, 2, 4))})
    with pytest.raises(ValueError, match="expected"):
        files["latents"][0] = torch.zeros(2, 5)


def test_a_step_that_cannot_be_written_is_a_one_line_error(tmp_path):
    create(tmp_path / "t.safetensors", {"latents": (torch.float32, (3, 2, 4))})
    read_only = open_tensors(tmp_path / "t.safetensors")["latents"]  # as a full disk refuses a write
    with pytest.raises(VidinvError, match=r"t.safetensors: cannot write step 1 of the record \(Bad file descriptor\)$"):
        read_only[1] = torch.zeros(2, 4)
    with pytest.raises(VidinvError, match="cannot write the record here"):
        create(tmp_path / "missing" / "t.safetensors", {"latents": (torch.float32, (3, 2, 4))})


@pytest.mark.parametrize("shared", [True, False])
def test_seeded_noise_redraws_each_steps_map_as_the_sequential_draws_made_it(shared):
    steps, shape = 6, (3, 4, 5, 5)
    generator = torch.Generator().manual_seed(7)
    draws = [torch.randn((1 if shared else 3, 4, 5, 5), generator=generator) for _ in range(steps)]
    noise = SeededNoise(shape, steps, seed=7, shared=shared)
    order = [4, 0, 5, 1, 3, 2]  # any order of reads
    assert all(torch.equal(noise[i], draws[steps - 1 - i]) for i in order)  # sampling order: the last draw first
    assert torch.equal(ef_noise(shape, steps, seed=7, shared=shared), torch.stack(draws[::-1]))


def run_config(method: str, record: str):
    return config_from_dict(
        {
            "model": {"frame_attention": "sparse_causal"},
            "inversion": {"method": method, "steps": 5, "source_prompt": "a bike", "noise": "independent"},
            "runtime": {"record": record},
        }
    )


@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi", "ddpm_ef"])
def test_every_inversion_writes_the_same_record_file_on_disk_as_in_memory(tiny_models, tmp_path, method):
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    in_memory, _ = api.invert_or_load(tiny_models, x0, run_config(method, "memory"), tmp_path / "memory")
    on_disk, _ = api.invert_or_load(tiny_models, x0, run_config(method, "disk"), tmp_path / "disk")
    assert not in_memory.on_disk and on_disk.on_disk
    assert md5(tmp_path / "disk" / TENSORS_NAME) == md5(tmp_path / "memory" / TENSORS_NAME)
    assert on_disk.latents.path == tmp_path / "disk" / TENSORS_NAME  # renamed from the partial folder
    assert torch.equal(on_disk.latents[0], in_memory.latents[0])
    timeless = lambda folder: {**json.loads((folder / "record.json").read_text()), "stats": None}  # noqa: E731
    assert timeless(tmp_path / "disk") == timeless(tmp_path / "memory")
    reloaded = InversionRecord.load(tmp_path / "memory", on_disk=True)
    assert torch.equal(reloaded.latents.tensor(), in_memory.latents)
    # a record made in memory is reused on disk: same fingerprint, nothing recomputed
    _, reused = api.invert_or_load(tiny_models, x0, run_config(method, "disk"), tmp_path / "memory")
    assert reused


EDIT = ["video.num_frames=3", "video.height=64", "video.width=64", "inversion.steps=4", "edit.target_prompt=a robot"]
EDIT += ["runtime.codec=ffv1"]  # lossless: the same bytes exactly when the edited pixels are the same


@pytest.mark.parametrize(
    "method",
    [
        "pnp",
        "tokenflow",
        "fatezero",
        "pnp inversion.method=ddpm_ef",
        "fatezero edit.fatezero.store=recompute",
        "pnp model.pretrained=tiny-sd3 inversion.method=flow",  # a flow model's Euler record
    ],
)
@pytest.mark.slow
def test_every_edit_gives_the_same_video_with_the_record_on_disk(tmp_path, monkeypatch, method):
    monkeypatch.chdir(REPO)  # the demo config's clip path is relative to the repository
    edit_method, *more = method.split()
    args = [*EDIT, f"edit.method={edit_method}", *more]
    for record in ("memory", "disk"):
        out = tmp_path / record
        assert (
            main(
                ["--quiet", "edit", "configs/demo.yaml", *args, f"runtime.record={record}", f"runtime.output_dir={out}"]
            )
            == 0
        )
    assert md5(tmp_path / "disk" / "edited.mkv") == md5(tmp_path / "memory" / "edited.mkv")
    assert (
        json.loads((tmp_path / "disk" / "metrics.json").read_text())["frame_calls"]
        == json.loads((tmp_path / "memory" / "metrics.json").read_text())["frame_calls"]
    )


def test_auto_keeps_the_record_on_disk_exactly_when_it_passes_the_limit():
    nbytes = record_bytes(EditFriendlyDDPMSampler.tensor_steps(50), 2**20)  # 51 latent sets + 50 noise maps of 1 MB
    assert nbytes == 101 * 2**20
    runtime = config_from_dict({"runtime": {"record": "auto", "record_limit_mb": 101}}).runtime
    assert not keeps_on_disk(runtime, nbytes) and keeps_on_disk(runtime, nbytes + 1)
    for mode, expected in (("memory", False), ("disk", True)):
        assert keeps_on_disk(config_from_dict({"runtime": {"record": mode}}).runtime, nbytes) is expected


def test_the_planner_counts_a_record_on_disk_out_of_host_memory():
    from vidinv.planning import plan_run

    clip = {"video": {"num_frames": 64, "height": 256, "width": 256}, "inversion": {"steps": 50}}
    in_memory = plan_run(config_from_dict({**clip, "runtime": {"record": "memory"}}), "edit")
    on_disk = plan_run(config_from_dict({**clip, "runtime": {"record": "disk"}}), "edit")
    assert in_memory.record_bytes == on_disk.record_bytes == 51 * 64 * 4 * 32 * 32 * 4
    assert in_memory.host_parts["record"] == in_memory.record_bytes and on_disk.host_parts["record"] == 0
    assert in_memory.host_peak - on_disk.host_peak == in_memory.record_bytes
    assert "on disk" in on_disk.summary() and "in host memory" in in_memory.summary()


def test_a_record_that_cannot_fit_on_its_disk_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    import vidinv.planning.run as plan

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(plan, "disk_free", lambda path: 2**20)  # a disk with 1 MB free (none can be filled here)
    out = tmp_path / "run"
    args = [
        "video.num_frames=16",
        "video.height=256",
        "video.width=256",
        "inversion.steps=50",
        f"runtime.output_dir={out}",
    ]
    assert main(["--quiet", "invert", "configs/demo.yaml", *args]) == 2
    err = capsys.readouterr().err.strip()
    record_mb = 51 * 16 * (4 * 32 * 32) * 4 / 2**20  # 51 levels x 16 frames of fp32 (4, 32, 32) latents
    expected = f"vidinv: error: plan: the inversion record ({record_mb:,.0f} MB) does not fit in the 1 MB free"
    assert err.startswith(expected) and "\n" not in err
    assert not (out / "inversion").exists()


def test_free_space_is_read_from_the_nearest_existing_folder(tmp_path):
    import shutil

    from vidinv.planning.memory import disk_free

    assert abs(disk_free(tmp_path / "not" / "yet" / "made") - shutil.disk_usage(tmp_path).free) < 64 * 2**20
