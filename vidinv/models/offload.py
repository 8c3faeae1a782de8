"""CPU offload of the model components with accelerate's hooks (diffusers' model / sequential offload).

- `model`: each component (text encoder, UNet, VAE) lives on the CPU and moves whole to the
  execution device when called (`accelerate.cpu_offload_with_hook`); the component that was there
  goes back to the CPU first, so one component at a time holds device memory.
- `sequential`: the weights stay on the CPU (the modules hold meta tensors) and each layer's weights
  visit the device for that layer's call only (`accelerate.cpu_offload`): least memory, slowest.

`models.device` stays the execution device: inputs go there (`execution_device(module)` says where
a possibly offloaded module runs), never to `next(module.parameters()).device`.
"""

from __future__ import annotations

import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from accelerate.hooks import ModelHook, add_hook_to_module
from accelerate.utils import send_to_device

from vidinv.errors import VidinvError

OFFLOAD_MODES = ("none", "model", "sequential")
MODULES = ("text_encoder", "unet", "vae")


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


class OneOnDevice:
    """Which component is on the execution device under model offload; `switch_to(name)` sends the
    one there back to the CPU (its accelerate `UserCpuOffloadHook.offload`) before `name` moves in."""

    def __init__(self):
        self.offload_hooks: dict = {}  # component name -> accelerate UserCpuOffloadHook
        self.resident: str | None = None

    def switch_to(self, name: str) -> None:
        if self.resident not in (None, name):
            self.offload_hooks[self.resident].offload()
        self.resident = name


class ArriveAlone(ModelHook):
    """Runs before accelerate's `CpuOffload` hook: frees the device of the previous component and
    sends the inputs to the execution device (the component may already be there, and accelerate
    then leaves inputs where they are)."""

    def __init__(self, group: OneOnDevice, name: str, device: torch.device):
        self.group, self.name, self.execution_device = group, name, device

    def pre_forward(self, module, *args, **kwargs):
        self.group.switch_to(self.name)
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)


def enable_model_offload(models) -> OneOnDevice:
    """Model-level offload of the three components to `models.device` (see the module doc)."""
    group = OneOnDevice()
    for name in MODULES:
        module = getattr(models, name)
        add_hook_to_module(module, ArriveAlone(group, name, models.device))
        _, group.offload_hooks[name] = cpu_offload_with_hook(module, models.device)  # appended after ArriveAlone
    return group


def enable_sequential_offload(models) -> None:
    """Layer-level offload of the three components to `models.device` (see the module doc)."""
    for name in MODULES:
        cpu_offload(getattr(models, name), models.device)


def apply_offload(models, mode: str) -> None:
    """`runtime.offload` on loaded models: none, model or sequential; `models.device` is unchanged."""
    if mode not in OFFLOAD_MODES:
        raise VidinvError(f"runtime.offload: {mode!r} is not one of {', '.join(OFFLOAD_MODES)}")
    if mode == "model":
        enable_model_offload(models)
    elif mode == "sequential":
        enable_sequential_offload(models)
