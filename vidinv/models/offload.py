"""CPU offload of the model components with accelerate's hooks (diffusers' model / sequential offload).

Every module component is offloaded (`offload_groups`): the text encoders (SDXL's second, SD3's
and Flux's T5 included), the denoiser (UNet or transformer) with its ControlNets, and the VAE.

- `model`: each group lives on the CPU and moves whole to the execution device when one of its
  modules is called (`accelerate.cpu_offload_with_hook`); the group that was there goes back to
  the CPU first, so one group at a time holds device memory. The denoiser and its ControlNets are
  one group: they are called in turn at every step.
- `sequential`: the weights stay on the CPU (the modules hold meta tensors) and each layer's weights
  visit the device for that layer's call only (`accelerate.cpu_offload`): least memory, slowest.

`load_models(..., offload=...)` loads the components onto the CPU and offloads them from there, so
the device never holds more than the offload allows, loading included. `models.device` stays the
execution device: inputs go there (`execution_device(module)` says where a possibly offloaded
module runs), never to `next(module.parameters()).device`.
"""

from __future__ import annotations

import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from accelerate.hooks import ModelHook, add_hook_to_module
from accelerate.utils import send_to_device

from vidinv.errors import VidinvError

OFFLOAD_MODES = ("none", "model", "sequential")
SD_MODULES = ("text_encoder", "text_encoder_2", "unet", "vae")


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device `module` computes on: its (or a submodule's) accelerate hook's execution device,
    else the device of its parameters (as diffusers' `DiffusionPipeline._execution_device`)."""
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        for h in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
            device = getattr(h, "execution_device", None)
            if device is not None:
                return torch.device(device)
    return next(module.parameters()).device


def placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """(execution device, dtype of its weights): where and in what a module's inputs go."""
    return execution_device(module), next(module.parameters()).dtype


def offload_groups(models) -> dict[str, list[torch.nn.Module]]:
    """Every module component of `models` (SD's `Models` or a flow pipeline's `PipelineModels`) by the
    group that moves to the device together under model offload: each text encoder alone, the
    denoiser with its ControlNets, the VAE."""
    pipeline = getattr(models, "pipeline", None)
    if pipeline is not None:
        named = {name: m for name, m in pipeline.components.items() if isinstance(m, torch.nn.Module)}
    else:
        named = {name: getattr(models, name) for name in SD_MODULES if getattr(models, name, None) is not None}
    groups = {name: [module] for name, module in named.items()}
    denoiser = "transformer" if "transformer" in groups else "unet"
    groups[denoiser] = groups[denoiser] + list(getattr(models, "controlnets", None) or [])
    return groups


class OneOnDevice:
    """Which group is on the execution device under model offload; `switch_to(name)` sends the
    group there back to the CPU (its modules' accelerate `UserCpuOffloadHook.offload`) before
    `name` moves in."""

    def __init__(self):
        self.offload_hooks: dict[str, list] = {}  # group name -> its modules' UserCpuOffloadHooks
        self.resident: str | None = None

    def switch_to(self, name: str) -> None:
        if self.resident not in (None, name):
            for hook in self.offload_hooks[self.resident]:
                hook.offload()
        self.resident = name


class ArriveAlone(ModelHook):
    """Runs before accelerate's `CpuOffload` hook: frees the device of the previous group and
    sends the inputs to the execution device (the module may already be there, and accelerate
    then leaves inputs where they are)."""

    def __init__(self, group: OneOnDevice, name: str, device: torch.device):
        self.group, self.name, self.execution_device = group, name, device

    def pre_forward(self, module, *args, **kwargs):
        self.group.switch_to(self.name)
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)


def enable_model_offload(models) -> OneOnDevice:
    """Model-level offload of every group to `models.device` (see the module doc)."""
    state = OneOnDevice()
    for name, modules in offload_groups(models).items():
        state.offload_hooks[name] = []
        for module in modules:
            add_hook_to_module(module, ArriveAlone(state, name, models.device))
            _, hook = cpu_offload_with_hook(module, models.device)  # appended after ArriveAlone
            state.offload_hooks[name].append(hook)
    return state


def enable_sequential_offload(models) -> None:
    """Layer-level offload of every module component to `models.device` (see the module doc)."""
    for modules in offload_groups(models).values():
        for module in modules:
            cpu_offload(module, models.device)


def apply_offload(models, mode: str) -> None:
    """`runtime.offload` on loaded models: none, model or sequential; `models.device` is unchanged.
    Models already offloaded in `mode` are left as they are (`models.offload` says which)."""
    if mode not in OFFLOAD_MODES:
        raise VidinvError(f"runtime.offload: {mode!r} is not one of {', '.join(OFFLOAD_MODES)}")
    current = getattr(models, "offload", "none")
    if mode == current:
        return
    if current != "none":
        raise VidinvError(f"runtime.offload: the models are already offloaded ({current}); load them again for {mode}")
    if mode == "model":
        enable_model_offload(models)
    elif mode == "sequential":
        enable_sequential_offload(models)
    models.offload = mode
