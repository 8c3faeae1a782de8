"""CPU offload (vidinv.models.offload): accelerate's hooks on every component, results equal to no
offload, weights on the CPU between calls, `models.device` still the execution device; every module
component offloaded (SDXL's second text encoder, SD3's T5, ControlNets with the UNet)."""

from __future__ import annotations

import pytest
import torch
from accelerate.hooks import AlignDevicesHook, CpuOffload

from vidinv import VideoEditor
from vidinv.attention import run_unet
from vidinv.config import config_from_dict
from vidinv.errors import VidinvError
from vidinv.jobs.common import load_models_for
from vidinv.models import decode_latents, encode_frames, encode_prompts
from vidinv.models.offload import execution_device, offload_groups

METHODS = ["pnp", "tokenflow", "fatezero"]


def offload_config(offload: str, method: str = "pnp"):
    return {
        "inversion": {"method": "freeinv", "steps": 3, "source_prompt": "a bike"},
        "edit": {"method": method, "tokenflow": {"keyframe_stride": 2}},
        "runtime": {"offload": offload, "unet_chunk": 2},
    }


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def edited(offload: str, method: str, frames: torch.Tensor) -> torch.Tensor:
    editor = VideoEditor(offload_config(offload, method), progress=False)
    return editor.edit(frames, "a car").frames


@pytest.fixture(scope="module")
def plain_edits(frames) -> dict:
    return {method: edited("none", method, frames) for method in METHODS}


def hooks_of(module) -> list:
    """The accelerate hooks attached to `module` itself (a SequentialHook's parts)."""
    hook = getattr(module, "_hf_hook", None)
    return [] if hook is None else list(getattr(hook, "hooks", [hook]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_model_offload_edit_equals_the_edit_without_offload(frames, plain_edits, method):
    torch.testing.assert_close(edited("model", method, frames), plain_edits[method], rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_sequential_offload_edit_equals_the_edit_without_offload(frames, plain_edits, method):
    torch.testing.assert_close(edited("sequential", method, frames), plain_edits[method], rtol=0, atol=0)


def component_outputs(offload: str, frames: torch.Tensor) -> dict:
    """VAE encode/decode, text encoder and one chunked UNet call, inputs on `models.device`."""
    models = load_models_for(config_from_dict(offload_config(offload)))
    latents = encode_frames(models.vae, frames)
    emb = encode_prompts(models, ["a bike"])
    eps = run_unet(models.unet, latents.unsqueeze(0).to(models.device), torch.tensor(500), emb, chunk=2)
    return {"latents": latents, "decoded": decode_latents(models.vae, latents), "emb": emb, "eps": eps}


def test_sequential_offload_components_give_the_outputs_without_offload(frames):
    torch.testing.assert_close(
        component_outputs("sequential", frames), component_outputs("none", frames), rtol=0, atol=0
    )


@pytest.mark.parametrize("mode, hook_class", [("model", CpuOffload), ("sequential", AlignDevicesHook)])
def test_offload_hooks_run_every_component_on_models_device(mode, hook_class):
    models = load_models_for(config_from_dict(offload_config(mode)))
    assert models.device == torch.device("cpu")  # the execution device this machine resolves to
    for name in ("text_encoder", "unet", "vae"):
        module = getattr(models, name)
        hooked = [h for sub in module.modules() for h in hooks_of(sub)]
        assert any(isinstance(h, hook_class) for h in hooked), name
        assert execution_device(module) == models.device


def test_model_offload_keeps_weights_on_the_cpu_and_one_component_on_the_device(monkeypatch):
    models = load_models_for(config_from_dict(offload_config("model")))
    group = hooks_of(models.unet)[0].group
    offloaded = []
    for name, (hook,) in group.offload_hooks.items():
        monkeypatch.setattr(
            hook, "offload", lambda name=name, hook=hook: offloaded.append(name) or hook.model.to("cpu")
        )
    encode_prompts(models, ["a bike"])
    assert group.resident == "text_encoder" and offloaded == []
    run_unet(models.unet, torch.zeros(1, 2, 4, 8, 8), torch.tensor(10), encode_prompts(models, ["a"]))
    assert group.resident == "unet" and offloaded == ["text_encoder"]
    decode_latents(models.vae, torch.zeros(1, 4, 8, 8))
    assert group.resident == "vae" and offloaded == ["text_encoder", "unet"]
    for name in ("text_encoder", "unet"):
        assert {p.device.type for p in getattr(models, name).parameters()} == {"cpu"}


def test_sequential_offload_keeps_weights_in_a_cpu_map_and_none_in_the_modules():
    models = load_models_for(config_from_dict(offload_config("sequential")))
    for name in ("text_encoder", "unet", "vae"):
        module = getattr(models, name)
        assert {p.device.type for p in module.parameters()} == {"meta"}
        maps = [h.weights_map for sub in module.modules() for h in hooks_of(sub) if getattr(h, "weights_map", None)]
        assert maps and {w.device.type for m in maps for w in m.dataset.values()} == {"cpu"}  # one state dict


def test_an_unknown_offload_mode_is_refused():
    with pytest.raises(VidinvError, match="runtime.offload"):
        config_from_dict({"runtime": {"offload": "disk"}})


@pytest.mark.parametrize("mode", ["model", "sequential"])
@pytest.mark.parametrize(
    "pretrained, components",
    [("tiny-sdxl", {"text_encoder", "text_encoder_2", "unet", "vae"}), ("tiny-sd3", None), ("tiny-flux", None)],
)
def test_every_module_component_is_offloaded(mode, pretrained, components):
    """No component stays resident: SDXL's second text encoder, SD3's and Flux's T5 and CLIPs, the
    transformer and the VAE each carry accelerate's hook (the offload's device figure assumes it)."""
    from vidinv.models import load_models

    models = load_models(pretrained, dtype="fp32", device="cpu", offload=mode)
    groups = offload_groups(models)
    if components is None:  # a flow pipeline: every nn.Module it holds
        components = {n for n, m in models.pipeline.components.items() if isinstance(m, torch.nn.Module)}
        assert {"text_encoder", "text_encoder_2", "transformer", "vae"} <= components
    assert set(groups) == components and models.offload == mode
    hook_class = CpuOffload if mode == "model" else AlignDevicesHook
    for name, modules in groups.items():
        for module in modules:
            assert any(isinstance(h, hook_class) for sub in module.modules() for h in hooks_of(sub)), name


def test_controlnets_move_with_the_unet_as_one_group(controlnet_folder):
    """Under model offload the UNet and its ControlNet are one group (called in turn every step):
    calling one does not send the other back to the CPU."""
    from vidinv.models import load_models

    models = load_models("tiny", dtype="fp32", device="cpu", controlnet=str(controlnet_folder), offload="model")
    groups = offload_groups(models)
    assert groups["unet"] == [models.unet, *models.controlnets]
    state = hooks_of(models.unet)[0].group
    assert hooks_of(models.controlnets[0])[0].group is state and len(state.offload_hooks["unet"]) == 2


def test_offload_applies_once_and_a_second_mode_is_refused():
    from vidinv.models import load_models
    from vidinv.models.offload import apply_offload

    models = load_models("tiny", dtype="fp32", device="cpu", offload="model")
    apply_offload(models, "model")  # what prepare_models does with the config's mode: nothing more
    assert len(hooks_of(models.unet)) == 2  # ArriveAlone + accelerate's CpuOffload, not twice
    with pytest.raises(VidinvError, match="already offloaded"):
        apply_offload(models, "sequential")
