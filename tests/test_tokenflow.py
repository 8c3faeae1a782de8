"""TokenFlow: correspondences (chunked NN search, gather, blending), keyframe schedule, and the edit
on the tiny model (exact equivalences, reconstruction properties, chunking, CLI and API)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO
from vidinv.attention import FramePattern, run_unet
from vidinv.attention.inflate import frame_attention_of
from vidinv.cli import main
from vidinv.config import config_from_dict, in_sections
from vidinv.editing import correspondence as corr
from vidinv.editing import get_edit_method, pnp_edit
from vidinv.editing.tokenflow import (
    TokenFlowEdit,
    frame_pattern,
    keyframe_schedule,
    keyframe_windows,
    tokenflow_edit,
    windows_read,
)
from vidinv.errors import VidinvError
from vidinv.inversion import invert, reconstruct
from vidinv.jobs.common import load_models_for
from vidinv.jobs.edit import WRITES as EDIT_WRITES

STEPS = 4


def tf_config(method="ddim", frame_attention="full", *, prompt="a bike", chunk=0, **edit):
    defaults = {"inject_features": 1.0, "inject_attention": 1.0, "keyframe_stride": 2}
    values = in_sections({"method": "tokenflow", "guidance_scale": 1.0, **defaults, **edit})
    return config_from_dict(
        {
            "model": {"frame_attention": frame_attention, "attention_group": 16},
            "inversion": {"method": method, "steps": STEPS, "source_prompt": "a bike"},
            "edit": {"target_prompt": prompt, **values},
            "runtime": {"unet_chunk": chunk},
        }
    )


@pytest.fixture(scope="module")
def full_models():
    """Tiny model with `full` attention over groups of 16 frames: plain extended attention for these clips."""
    return load_models_for(tf_config())


@pytest.fixture(scope="module")
def causal_models():
    return load_models_for(tf_config(frame_attention="sparse_causal"))


def clip(frames=4, h=8, w=8, seed=0, identical=False):
    g = torch.Generator().manual_seed(seed)
    if identical:
        return torch.randn(1, 4, h, w, generator=g).expand(frames, -1, -1, -1).contiguous()
    return torch.randn(frames, 4, h, w, generator=g)


# ---------------------------------------------------------------- correspondences


def brute_force_nn(queries, keys):
    q = torch.nn.functional.normalize(queries, dim=-1)
    k = torch.nn.functional.normalize(keys, dim=-1)
    return torch.einsum("fnc,fmc->fnm", q, k).argmax(-1)


@pytest.mark.parametrize("chunk", [1, 5, 16, 40, 1024])
def test_chunked_nearest_neighbours_equal_the_full_search(chunk):
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(3, 20, 8, generator=g), torch.randn(3, 24, 8, generator=g)
    assert torch.equal(corr.nearest_neighbours(queries, keys, chunk=chunk), brute_force_nn(queries, keys))


def test_nearest_neighbour_search_never_holds_more_than_a_chunk_of_similarities(monkeypatch):
    blocks = []
    bmm = torch.bmm

    def recording_bmm(a, b):
        out = bmm(a, b)
        blocks.append(out.numel())
        return out

    monkeypatch.setattr(corr.torch, "bmm", recording_bmm)
    g = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(6, 64, 8, generator=g), torch.randn(6, 64, 8, generator=g)
    for chunk, bound in [(16, 16 * 64), (128, 128 * 64), (1, 64)]:
        blocks.clear()
        corr.nearest_neighbours(queries, keys, chunk=chunk)
        assert max(blocks) <= bound and sum(blocks) == 6 * 64 * 64


def test_gather_with_identical_source_frames_is_the_identity():
    """A frame whose source tokens equal its keyframes' gets every token from the same position."""
    g = torch.Generator().manual_seed(2)
    source = torch.randn(1, 12, 16, generator=g)
    keyframes = (0, 3)
    values = torch.randn(2, 2, 12, 16, generator=g)  # two rows, two keyframes
    frames = (0, 1, 2, 3)
    index = corr.nearest_neighbours(source.expand(4, -1, -1), source.expand(4, -1, -1))
    assert torch.equal(index, torch.arange(12).expand(4, 12))
    same = values[:, :1].expand(-1, 2, -1, -1)  # both keyframes carry the same tokens
    out = corr.propagate(frames, source.expand(4, -1, -1), keyframes, source.expand(2, -1, -1), same)
    torch.testing.assert_close(out, same[:, :1].expand(-1, 4, -1, -1), atol=1e-6, rtol=0)
    # different keyframe tokens: position-wise linear blend by temporal distance
    out = corr.propagate(frames, source.expand(4, -1, -1), keyframes, source.expand(2, -1, -1), values)
    for i, w in enumerate([0.0, 1 / 3, 2 / 3, 1.0]):
        torch.testing.assert_close(out[:, i], (1 - w) * values[:, 0] + w * values[:, 1], atol=1e-6, rtol=0)
    assert torch.equal(out[:, 0], values[:, 0]) and torch.equal(out[:, 3], values[:, 1])


def test_propagation_moves_tokens_along_the_source_correspondences():
    """Frame tokens that are a permutation of the keyframe's get the keyframe values permuted alike."""
    g = torch.Generator().manual_seed(3)
    key = torch.randn(1, 10, 8, generator=g)
    perm = torch.randperm(10, generator=g)
    values = torch.randn(1, 1, 10, 4, generator=g)
    out = corr.propagate((0, 1), torch.stack([key[0], key[0, perm]]), (0,), key, values)
    assert torch.equal(out[0, 0], values[0, 0]) and torch.equal(out[0, 1], values[0, 0, perm])


def test_neighbour_keyframes_and_their_weights():
    kf = (1, 4, 8)
    assert corr.neighbour_keyframes(0, kf) == [(0, 1.0)]
    assert corr.neighbour_keyframes(4, kf) == [(1, 1.0)]
    assert corr.neighbour_keyframes(2, kf) == [(0, 2 / 3), (1, 1 / 3)]
    assert corr.neighbour_keyframes(7, kf) == [(1, 0.25), (2, 0.75)]
    assert corr.neighbour_keyframes(9, kf) == [(2, 1.0)]


def test_keyframe_schedule_one_per_group_seeded_and_varying():
    schedule = keyframe_schedule(10, 4, 30, seed=5)
    assert schedule == keyframe_schedule(10, 4, 30, seed=5)
    assert schedule != keyframe_schedule(10, 4, 30, seed=6)
    for keyframes in schedule:
        assert [k // 4 for k in keyframes] == [0, 1, 2] and keyframes[-1] < 10
    assert len(set(schedule)) > 1  # offsets change from step to step
    assert keyframe_schedule(5, 1, 3, seed=0) == [(0, 1, 2, 3, 4)] * 3


def test_frame_pattern_override_is_restored(full_models):
    handle = frame_attention_of(full_models.unet)
    before = (handle.pattern, handle.context.pattern)
    with pytest.raises(RuntimeError), frame_pattern(handle, FramePattern("full", group=3)):
        assert handle.mode == "full" and handle.pattern.group == 3
        raise RuntimeError
    assert (handle.pattern, handle.context.pattern) == before
    assert handle.pattern is before[0]


# ---------------------------------------------------------------- the edit on the tiny model


@pytest.mark.parametrize("method", ["ddim", "freeinv"])
def test_keyframe_stride_1_equals_the_plain_extended_attention_pnp_edit(full_models, method):
    """Every frame a keyframe: each frame is matched to itself (the identity field), so TokenFlow is
    PnP with extended attention over the whole clip (`full`, attention_group >= F)."""
    config = tf_config(method, prompt="a robot", guidance_scale=7.5, inject_features=0.8, inject_attention=0.5)
    config.edit.tokenflow.keyframe_stride = 1
    record = invert(full_models, clip(), config)
    tokenflow = tokenflow_edit(full_models, record, config)
    pnp = pnp_edit(full_models, record, config)
    torch.testing.assert_close(tokenflow.latents, pnp.latents, atol=1e-5, rtol=0)
    assert (tokenflow.latents - tokenflow.source_latents).abs().max() > 1e-2  # a real edit
    # the source row runs every step in TokenFlow (its correspondences), only while injecting in PnP
    assert tokenflow.stats.extra["keyframes_per_step"] == 4 and tokenflow.stats.frame_calls == 2 * 3 * 4 * STEPS
    assert pnp.stats.frame_calls == 4 * (2 * STEPS + round(0.8 * STEPS))


@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi"])
@pytest.mark.slow
def test_same_prompt_full_injection_stride_1_reproduces_the_reconstruction(full_models, method):
    config = tf_config(method, keyframe_stride=1)
    record = invert(full_models, clip(), config)
    expected = reconstruct(full_models, record, config)
    result = tokenflow_edit(full_models, record, config)
    torch.testing.assert_close(result.latents, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.source_latents, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("method", "frame_attention"),
    [("ddim", "full"), ("freeinv", "full"), ("mbdi", "sparse_causal"), ("freeinv", "sparse_causal")],
)
@pytest.mark.slow
def test_same_prompt_full_injection_reproduces_the_reconstruction_of_a_static_clip(
    full_models, causal_models, method, frame_attention
):
    """With keyframes sparser than the frames, the edit equals the reconstruction only where the
    propagated tokens equal the frame's own: a frame's edit output is the keyframes' outputs
    gathered along the source correspondences, which are other frames' tokens in general (on the
    random tiny model with a random clip the edit differs from the reconstruction by ~0.1-0.25;
    `test_same_prompt_edit_of_a_moving_clip_is_close_but_not_equal`). It is exact when the
    correspondence field is the identity and the keyframes' tokens are the frame's own: every
    frame a keyframe (above), or a clip of identical frames, for any stride, inversion method and
    frame-attention mode (extended attention over copies of a frame equals attention over one).
    The source branch is the reconstruction itself, always: equal up to the last bits that the
    UNet's batch shape changes (its row runs beside the edit rows; measured 4e-6 on some CPUs)."""
    models = full_models if frame_attention == "full" else causal_models
    config = tf_config(method, frame_attention, keyframe_stride=3)
    record = invert(models, clip(frames=5, identical=True), config)
    expected = reconstruct(models, record, config)
    result = tokenflow_edit(models, record, config)
    torch.testing.assert_close(result.latents, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.source_latents, expected, atol=2e-5, rtol=0)


def test_same_prompt_edit_of_a_moving_clip_is_close_but_not_equal(full_models):
    """The strongest property with stride > 1 on a moving clip: the source branch is the
    reconstruction (up to the last bits the batch shape changes); the edit is only near it (see
    the static-clip test for why)."""
    config = tf_config("ddim", keyframe_stride=2)
    record = invert(full_models, clip(), config)
    expected = reconstruct(full_models, record, config)
    result = tokenflow_edit(full_models, record, config)
    torch.testing.assert_close(result.source_latents, expected, atol=2e-5, rtol=0)
    gap = (result.latents - expected).abs().max().item()
    assert 1e-3 < gap < 1.0 * expected.abs().max().item()


@pytest.mark.parametrize("source_branch", ["reconstructed", "inverted"])
def test_ddpm_ef_same_prompt_edit_of_a_static_clip_reproduces_the_input(full_models, source_branch):
    """Without injection: PnP injects the source's conditional row into both edit rows, so under
    CFG (ddpm_ef's 3.5) the edit's unconditional row is not the source's (PnP alone differs too)."""
    config = tf_config(
        "ddpm_ef",
        guidance_scale=3.5,
        source_branch=source_branch,
        keyframe_stride=2,
        inject_features=0.0,
        inject_attention=0.0,
    )
    x0 = clip(frames=4, identical=True)
    record = invert(full_models, x0, config)
    result = tokenflow_edit(full_models, record, config)
    torch.testing.assert_close(result.latents, x0, atol=1e-4, rtol=0)


def test_chunked_propagation_equals_unchunked(causal_models):
    """Equal up to float rounding amplified by CFG 7.5 over the steps (PnP alone: ~4e-5 here)."""
    config = tf_config("freeinv", "sparse_causal", prompt="a robot", guidance_scale=7.5, keyframe_stride=2)
    record = invert(causal_models, clip(frames=5), config)
    whole = tokenflow_edit(causal_models, record, config)
    config.runtime.unet_chunk = 2
    chunked = tokenflow_edit(causal_models, record, config)
    torch.testing.assert_close(chunked.latents, whole.latents, atol=1e-4, rtol=0)


def test_keyframe_windows_and_the_windows_a_pass_reads():
    windows = keyframe_windows((1, 4, 7, 9), 2)
    assert windows == [(1, 4), (7, 9)] and keyframe_windows((1, 4, 7), 0) == [(1, 4, 7)]
    assert windows_read([5], (1, 4, 7, 9), 2) == [0, 1]  # between 4 (window 0) and 7 (window 1)
    assert windows_read([0, 2, 4], (1, 4, 7, 9), 2) == [0] and windows_read([9, 12], (1, 4, 7, 9), 2) == [1]
    assert windows_read([5], (1, 4, 7, 9), 0) == [0]


@pytest.mark.slow
def test_keyframe_windows_are_held_around_each_pass_and_chunking_leaves_the_edit_exact(causal_models):
    """Windows of one keyframe (K = 4): computed before the first propagation pass that reads them
    and dropped after the last, chunked (2 frames per pass) equals unchunked as with one window,
    at most 3 windows are held at once (all 4 when one pass reads them all), the UNet frame-calls
    are the same, and the edit differs from the joint keyframe edit (attention stays in a window)."""
    config = tf_config(
        "freeinv", "sparse_causal", prompt="a robot", guidance_scale=7.5, keyframe_stride=2, keyframe_window=1
    )
    record = invert(causal_models, clip(frames=8), config)
    whole = tokenflow_edit(causal_models, record, config)
    config.runtime.unet_chunk = 2
    chunked = tokenflow_edit(causal_models, record, config)
    torch.testing.assert_close(chunked.latents, whole.latents, atol=1e-4, rtol=0)
    assert whole.stats.extra["keyframe_windows_held"] == 4 and chunked.stats.extra["keyframe_windows_held"] <= 3
    config.edit.tokenflow.keyframe_window = 0
    joint = tokenflow_edit(causal_models, record, config)
    assert joint.stats.extra["keyframe_windows_held"] == 1
    assert joint.stats.frame_calls == chunked.stats.frame_calls == 3 * (4 + 8) * STEPS
    assert (joint.latents - chunked.latents).abs().max() > 1e-3


def test_edit_is_seeded_changes_with_the_prompt_and_leaves_the_unet_as_it_was(causal_models):
    unet = causal_models.unet
    handle = frame_attention_of(unet)
    pattern, hooks = handle.pattern, list(handle.hooks)
    config = tf_config("freeinv", "sparse_causal", prompt="a robot", guidance_scale=7.5, inject_attention=0.5)
    record = invert(causal_models, clip(frames=5), config)
    first, again = tokenflow_edit(causal_models, record, config), tokenflow_edit(causal_models, record, config)
    assert torch.equal(first.latents, again.latents)
    assert (first.latents - first.source_latents).abs().max() > 1e-2
    config.edit.seed = 1
    other = tokenflow_edit(causal_models, record, config)
    assert other.stats.extra["keyframes"] != first.stats.extra["keyframes"]
    assert not torch.equal(other.latents, first.latents)
    assert handle.pattern is pattern and handle.hooks == hooks and frame_attention_of(unet) is handle
    stats = first.stats.extra
    assert stats["keyframes_per_step"] == 3 and len(stats["keyframes"]) == STEPS
    calls = first.stats.frame_calls
    assert calls == stats["keyframe_pass_calls"] + stats["propagation_pass_calls"] == 3 * (3 + 5) * STEPS
    assert stats["nn_s"] > 0
    # the UNet still runs as before: no hook or pattern left behind
    z = torch.randn(1, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    run_unet(unet, z, 500, torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(0)))


def test_registered_and_bad_stride_is_a_one_line_config_error():
    assert get_edit_method("tokenflow") is TokenFlowEdit
    with pytest.raises(VidinvError, match="edit.tokenflow.keyframe_stride") as err:
        tf_config("ddim", "sparse_causal", keyframe_stride=0)
    assert "\n" not in str(err.value)


def test_edit_command_with_the_tokenflow_config(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "video.num_frames=4",
        "video.height=64",
        "video.width=64",
        "inversion.steps=3",
        "edit.tokenflow.keyframe_stride=2",
        f"runtime.output_dir={out}",
    ]
    assert main(["--quiet", "edit", "configs/tokenflow.yaml", *args]) == 0
    assert "edited 4 frames 64x64" in capsys.readouterr().out
    for name in (*EDIT_WRITES, "config.yaml"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["edit"]["method"] == "tokenflow" and metrics["edit"]["keyframes_per_step"] == 2
    assert metrics["frame_calls"]["edit"] == 3 * 3 * (2 + 4)  # source, uncond, cond x (keyframes + frames)
    assert main(["--quiet", "edit", "configs/tokenflow.yaml", *args]) == 2  # refused: outputs exist


def test_video_editor_api_runs_tokenflow(tmp_path, monkeypatch):
    from vidinv import VideoEditor

    monkeypatch.chdir(tmp_path)
    editor = VideoEditor.from_pretrained(
        "tiny",
        inversion={"steps": 3},
        edit={"method": "tokenflow", "tokenflow": {"keyframe_stride": 2}},
        video={"num_frames": 3, "height": 64, "width": 64, "path": str(REPO / "samples/bikes.mp4")},
    )
    frames = editor.read().frames
    out = editor.edit(frames, "a robot", source_prompt="a man")
    assert out.frames.shape == frames.shape and out.stats.extra["keyframes_per_step"] == 2
    assert list(tmp_path.iterdir()) == []
