"""ControlNet: loading, condition images, residuals in run_unet (chunked, scale 0 exact, MultiControlNet sums)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import moving_square
from tests.test_models import assert_one_line_error
from vidinv.attention import install_frame_attention, remove_frame_attention, run_unet
from vidinv.errors import VidinvError
from vidinv.models import encode_text, load_models
from vidinv.models.controlnet import Control, build_control, canny_images, condition_images, depth_images
from vidinv.models.tiny import build_tiny_controlnet

T = torch.tensor(400)


@pytest.fixture(scope="module")
def frames():
    """Five 64x64 frames with a moving bright square (edges to find), in [-1, 1]."""
    return moving_square(5, 64)


@pytest.fixture(scope="module")
def latents():
    return torch.randn(2, 5, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def control_for(controlnets, frames, scales) -> Control:
    images = canny_images(frames)
    return Control(tuple(controlnets), (images,) * len(controlnets), tuple(scales))


def test_canny_images_are_opencv_edges_in_three_channels(frames):
    import cv2

    images = canny_images(frames)
    first = ((frames[0, 0] + 1) * 127.5).round().byte().numpy()
    want = torch.from_numpy(cv2.Canny(first, 100, 200)).float() / 255
    assert images.shape == (5, 3, 64, 64) and set(images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(images[0, 2], want) and torch.equal(images[:, 0], images[:, 1])


def test_unknown_condition_kind_and_missing_depth_estimator_are_one_line_errors(frames, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(VidinvError) as err:
        condition_images(frames, "pose")
    assert_one_line_error(err, "edit.control")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(VidinvError) as err:
        depth_images(frames, estimator="vidinv-test/no-depth-model")
    assert_one_line_error(err, "edit.depth_estimator")
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_scale_zero_output_equals_the_unet_without_controlnet_byte_for_byte(tiny_models, frames, latents):
    controlnet = build_tiny_controlnet(tiny_models.unet)
    emb = encode_text(tiny_models, ["", "a red bike"]).emb
    handle = install_frame_attention(tiny_models.unet, "sparse_causal", "sdpa")
    try:
        for chunk in (None, 2):
            plain = run_unet(tiny_models.unet, latents, T, emb, chunk=chunk)
            zero = run_unet(
                tiny_models.unet, latents, T, emb, chunk=chunk, control=control_for([controlnet], frames, [0])
            )
            assert plain.numpy().tobytes() == zero.numpy().tobytes()
            one = run_unet(
                tiny_models.unet, latents, T, emb, chunk=chunk, control=control_for([controlnet], frames, [1])
            )
            assert (one - plain).abs().max() > 1e-3
    finally:
        handle.remove()


@pytest.mark.parametrize("mode", ["none", "sparse_causal", "keyframe"])
def test_controlled_unet_chunked_equals_unchunked(tiny_models, frames, latents, mode):
    control = control_for([build_tiny_controlnet(tiny_models.unet)], frames, [0.7])
    emb = encode_text(tiny_models, ["", "a red bike"]).emb
    install_frame_attention(tiny_models.unet, mode, "sdpa", keyframes="stride", keyframe_stride=2)
    try:
        whole = run_unet(tiny_models.unet, latents, T, emb, control=control)
        chunked = run_unet(tiny_models.unet, latents, T, emb, chunk=2, control=control)
    finally:
        remove_frame_attention(tiny_models.unet)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_controlled_unet_equals_diffusers_multicontrolnet_residuals_per_frame(tiny_models, frames, latents):
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    first = build_tiny_controlnet(tiny_models.unet)
    second = build_tiny_controlnet(tiny_models.unet)
    torch.nn.init.normal_(second.controlnet_mid_block.weight, generator=torch.Generator().manual_seed(3))
    scales = [0.5, 1.5]
    emb = encode_text(tiny_models, ["a red bike"]).emb
    z = latents[:1]
    got = run_unet(tiny_models.unet, z, T, emb, control=control_for([first, second], frames, scales))
    sample, context, images = z[0], emb.expand(5, -1, -1), canny_images(frames)
    down, mid = MultiControlNetModel([first, second])(sample, T, context, [images, images], scales, return_dict=False)
    want = tiny_models.unet(
        sample,
        T,
        encoder_hidden_states=context,
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
    ).sample
    torch.testing.assert_close(got[0], want, rtol=0, atol=1e-6)


def test_sdxl_controlnet_takes_the_added_conditioning(sdxl):
    text = encode_text(sdxl, ["", "a red bike"])
    clip = torch.rand(3, 3, 64, 64) * 2 - 1
    control = Control((build_tiny_controlnet(sdxl.unet),), (canny_images(clip),), (1.0,))
    z = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = run_unet(sdxl.unet, z, T, text.emb, added_cond_kwargs=text.added)
    controlled = run_unet(sdxl.unet, z, T, text.emb, added_cond_kwargs=text.added, control=control, chunk=2)
    assert controlled.shape == plain.shape and (controlled - plain).abs().max() > 1e-4


def test_controlnets_load_from_folders_and_build_a_control(controlnet_folder, frames):
    models = load_models("tiny", dtype="fp32", device="cpu", controlnet=[str(controlnet_folder)] * 2)
    assert len(models.controlnets) == 2 and not models.controlnets[0].training
    control = build_control(models, frames, ["canny", "canny"], [1.0, 0.0])
    assert control.scales == (1.0, 0.0) and len(control.active()) == 1
    assert control.images[0].shape == (5, 3, 64, 64)
    assert build_control(load_models("tiny", device="cpu"), frames, None) is None
    with pytest.raises(VidinvError) as err:
        build_control(models, frames, "canny", [1.0, 1.0, 1.0])
    assert_one_line_error(err, "edit.control")


@pytest.mark.parametrize("source", ["nope", "nope.safetensors"])
def test_missing_controlnet_is_a_one_line_error(tmp_path, source):
    with pytest.raises(VidinvError) as err:
        load_models("tiny", device="cpu", controlnet=str(tmp_path / source))
    assert_one_line_error(err, "model.controlnet")


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_single_file_controlnet_loads_offline_shaped_after_the_pipelines_unet(tiny_models, tmp_path, suffix):
    """An original-layout (ControlLDM) file carries no config: vidinv builds it from the pipeline's
    UNet and the file's hint convolutions, so it loads offline with the exact weights (diffusers alone
    fetches SD 1.5's canny ControlNet config from the hub: 43 s of retries and a failure offline)."""
    import time

    from safetensors.torch import save_file

    from tests.ldm_layout import controlnet_to_ldm

    net = build_tiny_controlnet(tiny_models.unet)
    ldm = {k: v.contiguous() for k, v in controlnet_to_ldm(net.state_dict(), net.config.layers_per_block).items()}
    path = tmp_path / f"control{suffix}"
    save_file(ldm, path) if suffix == ".safetensors" else torch.save({"state_dict": ldm}, path)
    started = time.perf_counter()
    models = load_models("tiny", dtype="fp32", device="cpu", controlnet=str(path))
    assert time.perf_counter() - started < 30  # no hub retries
    (loaded,) = models.controlnets
    reference = net.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(t, reference[k]) for k, t in loaded.state_dict().items())
    assert tuple(loaded.config.conditioning_embedding_out_channels) == tuple(
        net.config.conditioning_embedding_out_channels
    )
