"""The `Plan` record and its one builder: device peak and host budget from what a planner measured
(weights, activation peaks, frame-calls, the record and the store)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vidinv.config import Config
from vidinv.planning.calls import HOST_BASELINE_BYTES, MB, WORKING_LATENTS


@dataclass
class Plan:
    """What a run will cost (bytes unless named otherwise)."""

    command: str
    frames: int
    height: int
    width: int
    device: str
    frame_calls: dict[str, int]
    weights: dict[str, int]
    unet_activations: int
    vae_activations: int
    store_bytes: int | None
    device_peak: int
    host_peak: int
    host_parts: dict[str, int] = field(default_factory=dict)
    latent_frames: int | None = None  # a causal video VAE's (Wan): frame-calls count latent frames
    record_bytes: int = 0  # the inversion record's tensors
    record_on_disk: bool = False  # runtime.record: read and written step by step in its file
    # (windows, latent frames each, overlap) of a video model's clip longer than one window (runtime.window);
    # a class attribute, not a field: the recorded plans (asdict, tests/data/plan_snapshot.json) keep their keys
    windows = None

    def summary(self) -> str:
        mb = lambda n: f"{n / MB:,.0f} MB"  # noqa: E731
        calls = ", ".join(f"{k} {v:,}" for k, v in self.frame_calls.items())
        frames, unit = f"{self.frames} frames", ""
        if self.latent_frames is not None:
            frames, unit = f"{frames} ({self.latent_frames} latent frames)", " of latent frames"
        lines = [f"vidinv {self.command}: {frames} at {self.height}x{self.width} on {self.device}"]
        if self.windows is not None:
            count, size, overlap = self.windows
            lines.append(
                f"  temporal windows: {count} of {size} latent frames, overlapping by {overlap} (runtime.window);"
                " frame-calls count every window's frames"
            )
        lines += [
            f"  UNet frame-calls{unit}: {sum(self.frame_calls.values()):,} ({calls})",
            f"  weights: {mb(sum(self.weights.values()))} ("
            + ", ".join(f"{k} {mb(v)}" for k, v in self.weights.items())
            + ")",
            f"  activation peaks: one UNet call {mb(self.unet_activations)}, one VAE chunk {mb(self.vae_activations)}",
            f"  peak device memory: {mb(self.device_peak)}",
            f"  peak host memory: {mb(self.host_peak)} ("
            + ", ".join(f"{k} {mb(v)}" for k, v in self.host_parts.items())
            + ")",
        ]
        if self.record_bytes:
            where = "on disk, read step by step" if self.record_on_disk else "in host memory"
            lines.append(f"  inversion record: {mb(self.record_bytes)} {where} (runtime.record)")
        if self.store_bytes is not None:
            lines.append(f"  FateZero store: {mb(self.store_bytes)}")
        return "\n".join(lines)


def build_plan(
    config: Config,
    command: str,
    device: torch.device,
    shape: tuple[int, int, int],
    frame_calls: dict[str, int],
    weights: dict[str, int],
    device_weights: int,
    activations: tuple[int, int],
    latent_bytes: int,
    record: int,
    *,
    store: int | None = None,
    host_store: int | None = None,
    latent_frames: int | None = None,
) -> Plan:
    """The plan of `vidinv COMMAND` from what a planner measured on fake modules: `shape` (frames,
    height, width), the weights (and those on the device at once: all, the largest offload group, or
    the largest layer), the activation peaks (one UNet/transformer call, one VAE chunk), the latents'
    fp32 bytes, the record's bytes and FateZero's store (`host_store`: its bytes in host memory, None
    for a model without one). Device peak: weights + the larger of a denoiser call beside the working
    latents and a VAE chunk beside the latents; host: the command's baseline + what the host holds."""
    from vidinv.inversion.record import keeps_on_disk

    rt = config.runtime
    frames, height, width = shape
    unet_act, vae_act = activations
    if config.model.lora is not None:  # unfused LoRA layers stay beside the weights (fused: merged, none)
        from vidinv.models import resolve_dtype
        from vidinv.models.lora import lora_weight_bytes

        lora = lora_weight_bytes(config.model, resolve_dtype(config.model.dtype, device).itemsize)
        if lora:
            weights = {**weights, "lora": lora}
            device_weights += lora if rt.offload != "sequential" else 0
    working = WORKING_LATENTS * latent_bytes
    device_peak = device_weights + max(unet_act + working, vae_act + latent_bytes)
    on_disk = keeps_on_disk(rt, record)
    chunk = min(frames, rt.vae_chunk or frames)
    host_parts = {
        "baseline": HOST_BASELINE_BYTES[command],
        "weights": sum(weights.values()) if (rt.offload != "none" or device.type == "cpu") else 0,
        "record": 0 if on_disk else record,
        **({} if host_store is None else {"store": host_store}),
        "frame chunks": 2 * chunk * 3 * height * width * (1 + 4),  # uint8 and float32 pixels
        "working latents": working,
    }
    if device.type == "cpu":
        host_parts["activations"] = max(unet_act, vae_act)
    return Plan(
        command, frames, height, width, str(device), frame_calls, weights, unet_act, vae_act, store, device_peak,
        sum(host_parts.values()), host_parts, latent_frames, record_bytes=record, record_on_disk=on_disk,
    )  # fmt: skip
