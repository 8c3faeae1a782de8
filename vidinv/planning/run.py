"""Predict a run before it runs, from shapes alone (no weights, no frames decoded but one): frame-calls,
peak device and host memory, the inversion record and FateZero's store; `check_fits` refuses a run
whose prediction exceeds the machine. UNet models are planned by `vidinv.planning.unet`, flow
transformers (SD3, Flux, Wan) by `vidinv.planning.flow`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidinv.config import Config
from vidinv.errors import VidinvError
from vidinv.planning.budget import Plan
from vidinv.planning.calls import MB
from vidinv.planning.memory import device_capacity, disk_free, host_capacity


def plan_run(config: Config, command: str = "edit") -> Plan:
    """The prediction for `vidinv COMMAND` (edit | invert | reconstruct) with this config (seconds:
    fake tensors only)."""
    from vidinv.models.families import FAMILIES
    from vidinv.models.flow import flow_family_of

    config_folder = config.model.single_file_config
    family = flow_family_of(
        os.path.expanduser(config.model.pretrained), config_folder and os.path.expanduser(config_folder)
    )
    if family is not None:
        from vidinv.models.lora import check_lora_files
        from vidinv.planning.flow import plan_flow

        check_lora_files(config.model, family)  # a LoRA for another family: one line before loading

        return plan_flow(config, command, FAMILIES[family])
    from vidinv.planning.unet import plan_unet

    return plan_unet(config, command)


def check_fits(config: Config, command: str = "edit", record_dir: Path | None = None) -> Plan | None:
    """The plan, or a one-line VidinvError when its peak exceeds the device's or the host's memory,
    or the inversion record to be written in `record_dir` exceeds the free space of its disk."""
    from vidinv.inversion.record import JSON_NAME

    plan = plan_run(config, command)
    device = torch.device(plan.device)
    capacity = device_capacity(device)
    if capacity is not None and plan.device_peak > capacity:
        raise VidinvError(
            f"plan: predicted peak device memory {plan.device_peak / MB:,.0f} MB exceeds the"
            f" {capacity / MB:,.0f} MB free on {device} ({plan.frames} frames at {plan.height}x{plan.width};"
            " lower video.height/width, runtime.unet_chunk/vae_chunk, or set runtime.offload / vae_tiling)"
        )
    if plan.host_peak > host_capacity():
        raise VidinvError(
            f"plan: predicted peak host memory {plan.host_peak / MB:,.0f} MB exceeds this machine's"
            f" {host_capacity() / MB:,.0f} MB ({plan.frames} frames at {plan.height}x{plan.width})"
        )
    if record_dir is not None and not (Path(record_dir) / JSON_NAME).is_file():  # one there may be reused
        free = disk_free(record_dir)
        if plan.record_bytes > free:
            raise VidinvError(
                f"plan: the inversion record ({plan.record_bytes / MB:,.0f} MB) does not fit in the"
                f" {free / MB:,.0f} MB free on the disk of {record_dir} (set runtime.record_dir to another disk,"
                " or lower inversion.steps / video.num_frames)"
            )
    return plan
