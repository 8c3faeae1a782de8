"""Edits confined to a mask (`edit.mask`, `edit.mask_words`; docs/methods.md §8), for every edit method on
the tiny model of every family it runs on: an all-black mask gives the reconstruction's bytes, an
all-white one the unmasked edit's, a half-frame mask leaves the other half of the latents exactly
the source's; bad masks are one line before any inversion; `vidinv plan` counts the source branch a
mask adds; a masked run's metrics.json has the unedited region's PSNR / SSIM."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO
from vidinv.cli import main
from vidinv.config import config_from_dict, load_config
from vidinv.editing.masks import EditMask, WordMaps, latent_from_pixels, shape_mask
from vidinv.errors import VidinvError
from vidinv.inversion.costs import Costs
from vidinv.io import read_video
from vidinv.io.video import frames_to_uint8
from vidinv.planning import plan_run

SOURCE, TARGET = "a man riding a bike", "a robot riding a bike"
DEMO = REPO / "configs" / "demo.yaml"  # the tiny model on samples/bikes.mp4; `settings` override the rest
# (model, edit method, inversion method): every edit method on every family it runs on, and the
# kinds of source branch a mask blends with (the reconstruction of DDIM, FreeInv, a second-order
# flow record; the record's latents of ddpm_ef; FlowEdit's x_src)
CASES = [
    ("tiny", "pnp", "freeinv"),
    ("tiny", "pnp", "ddpm_ef"),
    ("tiny", "tokenflow", "ddim"),
    ("tiny", "fatezero", "ddim"),
    ("tiny-sd2", "pnp", "ddim"),
    ("tiny-sd2", "tokenflow", "freeinv"),
    ("tiny-sd2", "fatezero", "ddpm_ef"),
    ("tiny-sdxl", "pnp", "freeinv"),
    ("tiny-sdxl", "tokenflow", "ddim"),
    ("tiny-sdxl", "fatezero", "freeinv"),
    ("tiny-sd3", "pnp", "flow"),
    ("tiny-flux", "pnp", "rf_solver"),
    ("tiny-sd3", "flowedit", "freeinv"),
    ("tiny-flux", "flowedit", "freeinv"),
    ("tiny-wan", "flowedit", "freeinv"),
]


def frames_for(model: str) -> int:
    return 5 if model == "tiny-wan" else 2  # Wan: 1 + 4k frames


def settings(model, method, inversion, out: Path, size=(64, 64), **more) -> list[str]:
    values = {
        "model.pretrained": model,
        "model.device": "cpu",
        "video.path": str(REPO / "samples" / "bikes.mp4"),
        "video.num_frames": frames_for(model),
        "video.height": size[0],
        "video.width": size[1],
        "inversion.method": inversion,
        "inversion.steps": 3,
        "inversion.source_prompt": SOURCE,
        "edit.method": method,
        "edit.target_prompt": TARGET,
        "runtime.codec": "ffv1",
        "runtime.record_dir": str(out.parent / "record"),  # one inversion for the runs of a case
        "runtime.output_dir": str(out),
        **more,
    }
    if model == "tiny-wan":
        values["model.frame_attention"] = "none"
    return [f"{key}={'null' if value is None else value}" for key, value in values.items()]


def run(command: str, overrides: list[str]) -> None:
    assert main(["-q", command, str(DEMO), *overrides]) == 0


def write_mask(path: Path, size: tuple[int, int], region: tuple[slice, slice] | None, value: int = 255) -> Path:
    """A one-channel PNG: black, with `region` (rows, columns) at `value` (all of it with None)."""
    picture = np.zeros(size, np.uint8)
    picture[region if region is not None else (slice(None), slice(None))] = value
    Image.fromarray(picture, mode="L").save(path)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pictures(path: Path) -> np.ndarray:
    """A lossless video's 8-bit pictures (f, H, W, 3)."""
    return frames_to_uint8(read_video(path, size=None, decoder="pyav").frames)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "method", "inversion"), CASES)
def test_black_gives_the_reconstruction_and_white_the_unmasked_edit_bytes_exactly(tmp_path, model, method, inversion):
    """ffv1 files, md5: an all-black mask's edited.mkv is `vidinv reconstruct`'s reconstruction.mkv
    (FlowEdit, inversion-free: its source, the VAE round trip `vidinv encode` writes, roundtrip.mkv);
    an all-white mask's is the unmasked edit's. Each masked run counts the frame-calls its plan predicts."""
    size = (64, 64)
    black = write_mask(tmp_path / "black.png", size, None, 0)
    white = write_mask(tmp_path / "white.png", size, None, 255)
    run("edit", settings(model, method, inversion, tmp_path / "plain"))
    for name, mask in (("black", black), ("white", white)):
        overrides = settings(model, method, inversion, tmp_path / name, **{"edit.mask": mask})
        run("edit", overrides)
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["frame_calls"]["edit"] == plan_run(load_config(DEMO, overrides)).frame_calls["edit"]
        assert metrics["edit"]["mask"]["mean_fraction"] == (0.0 if name == "black" else 1.0)
    assert md5(tmp_path / "white" / "edited.mkv") == md5(tmp_path / "plain" / "edited.mkv")
    if method == "flowedit":
        run("encode", settings(model, method, inversion, tmp_path / "source"))
        expected = tmp_path / "source" / "roundtrip.mkv"
    else:
        run("reconstruct", settings(model, method, inversion, tmp_path / "source"))
        expected = tmp_path / "source" / "reconstruction.mkv"
    assert md5(tmp_path / "black" / "edited.mkv") == md5(expected)


# the VAE decoders are not local: AutoencoderKL's (SD, SDXL, SD3, Flux) normalises with GroupNorm over
# the whole frame and attends over it in its mid block, Wan's attends over each frame in its middle,
# so an edited region moves every pixel a little; decoding in tiles (runtime.vae_tiling) bounds a
# pixel's receptive field to the tiles it is blended from
TILE = 64  # runtime.vae_tile_size: 64-px tiles, 16-px overlaps (stride 48)
MARGIN = 32  # measured: at the half-frame mask below, pixels farther than this from it are the source's


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "method", "inversion"), [("tiny", "pnp", "freeinv"), ("tiny-wan", "flowedit", "freeinv")]
)
def test_a_half_frame_mask_leaves_the_rest_of_the_frames_the_reconstructions(tmp_path, model, method, inversion):
    """64x256 frames, the left half white: outside the mask, the lossless frames (ffv1) equal the
    reconstruction's (FlowEdit: the source's VAE round trip) within 1/255 beyond MARGIN = 32 px of it,
    with 64-px VAE tiles; measured: exactly equal (0 levels) beyond 32 px on every family (SD, SDXL,
    SD3, Flux, Wan), 1-2 levels at 32 px, up to 150 levels next to it. Untiled, the tiny decoders
    spread the edit over the whole frame (64 px from the mask: 53 levels on tiny SD, 81 SD3, 24 Flux,
    8 Wan). The metrics of the unedited region are `vidinv eval --mask`'s of the same files."""
    size = (64, 256)
    mask = write_mask(tmp_path / "half.png", size, (slice(None), slice(0, 128)))
    tiling = {"runtime.vae_tiling": "true", "runtime.vae_tile_size": TILE}
    run("edit", settings(model, method, inversion, tmp_path / "half", size, **{"edit.mask": mask}, **tiling))
    if method == "flowedit":
        run("encode", settings(model, method, inversion, tmp_path / "source", size, **tiling))
        expected = pictures(tmp_path / "source" / "roundtrip.mkv")
    else:
        run("reconstruct", settings(model, method, inversion, tmp_path / "source", size, **tiling))
        expected = pictures(tmp_path / "source" / "reconstruction.mkv")
    edited = pictures(tmp_path / "half" / "edited.mkv")
    difference = np.abs(edited.astype(int) - expected.astype(int)).max(axis=(0, 3))  # (H, W)
    distance = np.arange(size[1]) - 127  # columns: Chebyshev distance from the mask (0: inside)
    assert difference[:, distance > MARGIN].max() <= 1
    assert difference[:, distance > MARGIN].max() == 0  # in fact exact
    assert difference[:, distance <= 0].max() > 1  # the edit did change the masked half
    metrics = json.loads((tmp_path / "half" / "metrics.json").read_text())
    assert metrics["mask"] == "edit.mask"
    measured = metrics["temporal_consistency"]
    assert measured["unedited_fraction"] == pytest.approx(0.5)
    files = [str(tmp_path / "half" / name) for name in ("source.mkv", "edited.mkv")]
    assert main(["-q", "eval", *files, "--mask", str(mask), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    for key in ("psnr_unedited_db", "ssim_unedited", "unedited_fraction"):
        assert evaluated[key] == measured[key], key


@pytest.fixture(scope="module")
def tiny_editor():
    from vidinv import VideoEditor

    values = {"method": "pnp", "target_prompt": TARGET}
    editor = VideoEditor.from_pretrained(
        "tiny", inversion={"method": "ddim", "steps": 3, "source_prompt": SOURCE}, edit=values
    )
    clip = editor.read(REPO / "samples" / "bikes.mp4", num_frames=2, height=64, width=128)
    record, _ = editor.invert(clip.frames)
    return editor, clip.frames, record


def test_outside_a_half_mask_the_latents_are_the_reconstructions_exactly(tiny_editor):
    from vidinv.inversion import reconstruct

    editor, frames, record = tiny_editor
    mask = torch.zeros(64, 128)
    mask[:, :64] = 1  # left half: latent columns 0-7
    out = editor.edit(frames, record=record, mask=mask)
    source = reconstruct(editor.models, record, editor.config)
    assert torch.equal(out.latents[..., 8:], source[..., 8:])
    assert not torch.equal(out.latents[..., :8], source[..., :8])
    assert out.stats.extra["mask"]["source"] == "reconstructed"
    region = out.mask.edited_pixels(2, (64, 128))  # metrics.json's edited region: the cells let change
    assert region[:, :, :64].all() and not region[:, :, 64:].any()


def test_mask_words_give_a_mask_per_frame_and_step_counted_by_the_plan(tiny_editor):
    """The source branch's cross-attention on "bike" (threshold 0.95: the random tiny UNet's maps are
    flat, within 10% of their maximum), per frame; the reconstruction beside the edit is counted."""
    editor, frames, record = tiny_editor
    config = copy.deepcopy(editor.config)
    config.edit.mask_words, config.edit.mask_words_threshold = ["bike"], 0.95
    from vidinv import VideoEditor

    words = VideoEditor(config, models=editor.models).edit(frames, record=record)
    fraction = words.stats.extra["mask"]["mean_fraction"]
    assert 0 < fraction < 1 and words.mask.current.shape == (2, 1, 8, 16)
    plan = copy.deepcopy(config)
    plan.video.num_frames, plan.video.height, plan.video.width = 2, 64, 128
    plan.video.path = str(REPO / "samples" / "bikes.mp4")
    assert words.stats.frame_calls == plan_run(plan).frame_calls["edit"]
    config.edit.mask_words = ["zebra"]
    with pytest.raises(VidinvError, match="edit.mask_words: 'zebra' is not in the source prompt"):
        VideoEditor(config, models=editor.models).edit(frames, record=record)


@pytest.mark.parametrize(
    ("model", "method", "inversion", "threshold"),
    [
        ("tiny-sd3", "pnp", "flow", 0.9),
        ("tiny-flux", "flowedit", "freeinv", 0.6),
        ("tiny-wan", "flowedit", "freeinv", 0.9),
    ],
)
def test_mask_words_on_the_joint_and_video_attention(model, method, inversion, threshold):
    """SD3 / Flux: the image queries' softmax over the text tokens in every joint attention layer;
    Wan: in every cross-attention layer, over the whole latent clip."""
    from vidinv import VideoEditor

    edit = {"method": method, "target_prompt": TARGET, "mask_words": ["bike"], "mask_words_threshold": threshold}
    editor = VideoEditor.from_pretrained(
        model,
        model={"frame_attention": "none"},
        inversion={"method": inversion, "steps": 3, "source_prompt": SOURCE},
        edit=edit,
    )
    frames = frames_for(model)
    out = editor.edit(editor.read(REPO / "samples" / "bikes.mp4", num_frames=frames, height=64, width=64).frames)
    latent_frames = 2 if model == "tiny-wan" else frames
    assert out.mask.current.shape == (latent_frames, 1, 8, 8)
    assert 0 < out.stats.extra["mask"]["mean_fraction"] < 1


def test_word_maps_of_temporal_windows_add_up_to_the_clips_own():
    """In temporal windows a latent frame's word maps arrive once per window covering it, weighted by
    that window's ramp (as its velocities are); the ramps sum to one, so maps that do not depend on the
    window (the same queries) add up to the unwindowed call's."""
    from vidinv.attention.windows import Windows

    frames, size, heads, width = 9, (4, 4), 2, 8
    mask = EditMask(frames, size, "edit.mask_words", tokens=[1, 2])
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, frames * 16, heads, width, generator=g)
    k = torch.randn(1, 6, heads, width, generator=g)
    whole, windowed = WordMaps(mask, row=0), WordMaps(mask, row=0)
    whole.video_maps(q, k, width**-0.5)
    per_frame = q.unflatten(1, (frames, 16))
    windows, seen = Windows(5, 3), []  # 3 windows of 5 latent frames, 3 shared: frames seen up to 3 times

    def call(span):
        part = per_frame[:, span].flatten(1, 2)
        windowed.video_maps(part, k, width**-0.5)
        seen.append(span)
        return torch.zeros(1, part.shape[1] // 16)

    windows.run(call, frames)
    assert len(seen) == 3 and len({len(w) for w in windows.weights(frames)}) == 1
    assert not torch.equal(windows.weights(frames)[0], torch.ones(5) / 3)  # ramps, not a plain mean
    torch.testing.assert_close(windowed.total, whole.total, rtol=0, atol=1e-6)


def test_mask_words_on_wan_in_temporal_windows_make_a_mask_per_latent_frame_counted_by_the_plan(tmp_path):
    """The edit in windows of one latent frame: every window's cross-attention maps reach the mask."""
    out = tmp_path / "run"
    more = {"edit.mask_words": "[bike]", "edit.mask_words_threshold": 0.9, "runtime.window": 1}
    more["runtime.window_overlap"] = 0
    args = settings("tiny-wan", "flowedit", "freeinv", out, **more)
    assert main(["--quiet", "edit", "configs/tiny/wan_edit.yaml", *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mask"] == "edit.mask_words" and 0 < metrics["edit"]["mask"]["mean_fraction"] < 1
    assert metrics["frame_calls"] == plan_run(load_config(out / "config.yaml"), "edit").frame_calls


def test_word_maps_are_seen_back_through_freeinvs_transform():
    """A map recorded in a call made in FreeInv's rot90 orientation is added in the latent's own."""

    class Oriented:
        orientation = "rot90"

    mask = EditMask(1, (4, 4), "edit.mask_words", tokens=[1])
    probe = WordMaps(mask, row=0, model=Oriented(), cross_layers=["attn2"])
    pattern = torch.arange(16.0).reshape(4, 4)
    p = torch.zeros(1, 1, 1, 16, 3)  # (b, q, heads, n, tokens): token 1 holds the rotated pattern
    p[0, 0, 0, :, 1] = torch.rot90(pattern, 1).reshape(16)
    probe.probs("attn2", p, (0,))
    torch.testing.assert_close(probe.total[0], pattern)


def test_dilate_and_feather_are_in_latent_cells():
    m = torch.zeros(1, 1, 9, 9)
    m[..., 4, 4] = 1
    grown = shape_mask(m, dilate=1)
    assert grown[0, 0, 3:6, 3:6].eq(1).all() and grown.sum() == 9
    soft = shape_mask(m, dilate=1, feather=2)  # a ramp 2/3, 1/3 over the two rings outside
    assert (
        soft[0, 0, 4, 4] == 1 and soft[0, 0, 4, 6] == pytest.approx(2 / 3) and soft[0, 0, 4, 7] == pytest.approx(1 / 3)
    )
    assert soft[0, 0, 4, 8] == 0


def test_pixels_to_the_latent_grid_and_wans_latent_frames():
    pixels = torch.zeros(9, 16, 16)
    pixels[0, :8, :8] = 1  # frame 0: one cell of 8x8 pixels
    pixels[6, :4, :] = 1  # frame 6 (latent frame 2 of Wan: frames 5-8): half of the top cells
    m = latent_from_pixels(pixels, 3, (2, 2), per_latent=4)
    assert m.shape == (3, 1, 2, 2)
    assert m[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]] and m[1].sum() == 0
    assert m[2, 0].tolist() == [[0.5, 0.5], [0.0, 0.0]]  # the largest of its frames
    one = latent_from_pixels(torch.ones(1, 16, 16), 3, (2, 2))
    assert one.shape == (3, 1, 2, 2) and one.eq(1).all()


def test_the_mask_settings_are_checked_with_the_config():
    with pytest.raises(VidinvError, match="edit.mask_words"):
        config_from_dict({"edit": {"mask": "m.png", "mask_words": ["bike"]}})
    with pytest.raises(VidinvError, match="edit.mask_dilate"):
        config_from_dict({"edit": {"mask_dilate": -1}})
    with pytest.raises(VidinvError, match="edit.mask_words_threshold"):
        config_from_dict({"edit": {"mask_words_threshold": 1.5}})


def test_the_plan_adds_the_source_branch_a_mask_needs():
    """F x S x R_s (x |group|) more for a reconstructed source; for the record's latents (ddpm_ef,
    PnP's inverted source) the exact sampler's last step and with mask_words the cond row at them;
    FlowEdit nothing."""
    from vidinv.editing import get_edit_method

    def calls(method, inversion, **edit):
        config = config_from_dict(
            {
                "inversion": {"method": inversion, "steps": 10, "source_prompt": SOURCE},
                "edit": {"method": method, "target_prompt": TARGET, **edit},
            }
        )
        return get_edit_method(method).predicted_frame_calls(config, 8, (8, 8), family="sd3")

    plain = calls("pnp", "ddim")
    assert calls("pnp", "ddim", mask="m.png") == plain + 8 * 10 * 1  # guidance 1 at the inversion: 1 row
    assert calls("pnp", "ddim", mask_words=["bike"]) == plain + 8 * 10
    assert calls("pnp", "mbdi", mask="m.png") == calls("pnp", "mbdi") + 8 * 10 * 4  # the rot90 group
    skip = round(0.36 * 10)
    # the record is the source, but for the reconstruction's last step (guided at 3.5: 2 rows)
    assert calls("pnp", "ddpm_ef", mask="m.png") == calls("pnp", "ddpm_ef") + 8 * 2
    assert calls("pnp", "ddpm_ef", mask_words=["bike"]) == calls("pnp", "ddpm_ef") + 8 * 2 + 8 * (10 - skip)
    assert calls("pnp", "ddim", mask="m.png", pnp={"source_branch": "inverted"}) == calls(
        "pnp", "ddim", pnp={"source_branch": "inverted"}
    )
    assert calls("fatezero", "ddim", mask="m.png") == calls("fatezero", "ddim") + 8 * 10 * 1
    assert calls("tokenflow", "ddim", mask="m.png") == calls("tokenflow", "ddim") + 8 * 10
    assert calls("flowedit", "freeinv", mask="m.png") == calls("flowedit", "freeinv")
    config = config_from_dict(
        {"inversion": {"method": "ddim", "guidance_scale": 2.0, "source_prompt": SOURCE}, "edit": {"mask": "m.png"}}
    )
    assert Costs(config).mask_calls(8, (8, 8), from_record=False) == 8 * 50 * 2  # the record's guided rows


@pytest.mark.slow
def test_bad_masks_are_one_line_before_any_inversion(tmp_path, capsys):
    """Exit 2, one line on stderr, no inversion record: a mask with too few frames, an unreadable
    image, a colour image (not one channel), mask_words absent from the source prompt."""
    folder = tmp_path / "two"
    folder.mkdir()
    for i in range(2):
        write_mask(folder / f"{i}.png", (64, 64), (slice(0, 32), slice(None)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    colour = tmp_path / "colour.png"
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(colour)
    cases = {
        "frames": ({"edit.mask": folder, "video.num_frames": 3}, "edit.mask: 2 frames selected, the clip 3"),
        "unreadable": ({"edit.mask": broken}, "not a readable image"),
        "colour": ({"edit.mask": colour}, "not one channel"),
        "words": ({"edit.mask_words": "[zebra]"}, "edit.mask_words: 'zebra' is not in the source prompt"),
        "missing": ({"edit.mask": tmp_path / "none.png"}, "does not exist"),
    }
    for name, (values, words) in cases.items():
        capsys.readouterr()
        overrides = settings("tiny", "pnp", "ddim", tmp_path / name / "run", **values)
        assert main(["-q", "edit", str(DEMO), *overrides]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, (name, err)
        assert not (tmp_path / name / "record").exists(), name  # no inversion ran (runtime.record_dir)


def test_edit_mask_is_read_from_its_file_by_the_api_as_the_tensor_gives_it(tiny_editor, tmp_path, monkeypatch):
    """`edit.mask` read by `VideoEditor.edit` equals the same mask given as a tensor; a method whose class says it takes no mask (`masks = False`) is refused in one line."""
    from vidinv import VideoEditor
    from vidinv.editing.pnp import PnPEdit

    editor, frames, record = tiny_editor
    config = copy.deepcopy(editor.config)
    config.edit.mask = str(write_mask(tmp_path / "half.png", (64, 128), (slice(None), slice(0, 64))))
    from_file = VideoEditor(config, models=editor.models).edit(frames, record=record)
    half = torch.zeros(64, 128)
    half[:, :64] = 1
    assert torch.equal(from_file.latents, editor.edit(frames, record=record, mask=half).latents)
    assert from_file.stats.extra["mask"]["origin"] == "edit.mask"
    monkeypatch.setattr(PnPEdit, "masks", False)
    with pytest.raises(VidinvError, match="does not confine its edit to a mask"):
        editor.edit(frames, record=record, mask=half)
