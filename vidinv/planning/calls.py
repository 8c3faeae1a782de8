"""Frame-calls of a run, one formula per method (the unit of vidinv's cost model): what `vidinv plan`
predicts and tests check against the runs' counters; and the planner's constants."""

from __future__ import annotations

import math

from vidinv.config import Config

MB = 2**20
LATENT_CHANNELS = 4
WORKING_LATENTS = 6  # latent-sized tensors the samplers keep beside the record (z, eps, pair, ...)
# RSS of a process before its tensors: python, torch, diffusers, transformers, av (+ cv2 and the
# clip comparison for the commands that write videos). Measured with scripts/bench_memory.py on
# the tiny model: `edit` 650-700 MB on 1 frame; `invert` 549 MB at 16 frames of 128x128, of which
# ~60 MB are its tensors
HOST_BASELINE_BYTES = {"edit": 640 * MB, "reconstruct": 640 * MB, "invert": 500 * MB}


# ---------------------------------------------------------------- frame-calls (one function per method)
def rows(guidance: float, prompt: str, uncond_prompt: str = "") -> int:
    """UNet rows of one branch: 2 with classifier-free guidance (`vidinv.guidance.is_guided`), else 1."""
    from vidinv.guidance import is_guided

    return 2 if is_guided(prompt, guidance, uncond_prompt) else 1


def group_size(config: Config, latent_hw: tuple[int, int]) -> int:
    """UNet evaluations per step and row: MBDI's transform group, 1 for the other methods."""
    return inversion_method(config).evaluations_per_step(latent_hw)


def inversion_method(config: Config):
    from vidinv.inversion.methods import get_inversion_method

    return get_inversion_method(config.inversion.method)(config.inversion)


def source_rows(config: Config) -> int:
    """Rows of the record's prompt (the inversion and a reconstructed source branch)."""
    return rows(inversion_method(config).guidance(), config.inversion.source_prompt)


def edit_rows(config: Config) -> int:
    ed = config.edit
    return rows(ed.guidance_scale, ed.target_prompt, ed.negative_prompt)


def start_step(config: Config) -> int:
    """The step edits and reconstructions start from (T_skip for an exact sampler)."""
    from vidinv.registry import SAMPLERS

    sampler = SAMPLERS.get(inversion_method(config).sampler)(range(config.inversion.steps))  # only its length is read
    return sampler.default_start(config.edit.skip)


def edit_steps(config: Config) -> int:
    return config.inversion.steps - start_step(config)


def inversion_calls(config: Config, frames: int, latent_hw: tuple[int, int]) -> int:
    """F x steps x source rows x (|group| for mbdi)."""
    return frames * config.inversion.steps * source_rows(config) * group_size(config, latent_hw)


def _injected_source_rows(config: Config) -> int:
    """Rows of the source branch that feeds injection: the record's rows when reconstructed, else 1."""
    from vidinv.registry import SAMPLERS

    exact = SAMPLERS.get(inversion_method(config).sampler).exact
    return 1 if exact or config.edit.source_branch == "inverted" else source_rows(config)


def pnp_calls(config: Config, frames: int, latent_hw: tuple[int, int]) -> int:
    """F x (R_e x S + R_s x max(0, K - start)): the source rows run only while injecting."""
    ed, n = config.edit, config.inversion.steps
    injected = max(0, round(max(ed.inject_features, ed.inject_attention) * n) - start_step(config))
    per_group = frames * (edit_rows(config) * edit_steps(config) + _injected_source_rows(config) * injected)
    return per_group * group_size(config, latent_hw)


def tokenflow_calls(config: Config, frames: int, latent_hw: tuple[int, int]) -> int:
    """Every edit step: rows x (K keyframes + F frames), K = ceil(F / edit.keyframe_stride); the
    source rows run every step (the correspondences)."""
    keyframes = math.ceil(frames / config.edit.keyframe_stride)
    per_step = (_injected_source_rows(config) + edit_rows(config)) * (keyframes + frames)
    return edit_steps(config) * per_step * group_size(config, latent_hw)


def fatezero_calls(config: Config, frames: int, latent_hw: tuple[int, int], *, recompute: bool = False) -> int:
    """F x R_e x S with a stored store; recomputing adds a source row for the fused steps (and a
    mask pre-pass per masked step with blend words)."""
    ed, n, start = config.edit, config.inversion.steps, start_step(config)
    calls = frames * edit_rows(config) * edit_steps(config)
    if recompute:
        fused = max(0, max(round(ed.self_attn_steps * n), round(ed.cross_attn_steps * n)) - start)
        calls += frames * fused * (2 if ed.blend_words else 1)
    return calls * group_size(config, latent_hw)


EDIT_CALLS = {"pnp": pnp_calls, "tokenflow": tokenflow_calls, "fatezero": fatezero_calls}


def frame_calls(
    config: Config, command: str, frames: int, latent_hw: tuple[int, int], store_in_memory: bool = True
) -> dict[str, int]:
    """UNet frame-calls per stage of `command` (edit | invert | reconstruct)."""
    calls = {"inversion": inversion_calls(config, frames, latent_hw)}
    if command == "edit" and config.edit.method == "fatezero":
        calls["edit"] = fatezero_calls(config, frames, latent_hw, recompute=not store_in_memory)
    elif command == "edit" and config.edit.method in EDIT_CALLS:
        calls["edit"] = EDIT_CALLS[config.edit.method](config, frames, latent_hw)
    elif command == "edit":  # a plug-in: its own prediction, if it makes one
        from vidinv.editing import get_edit_method

        predicted = get_edit_method(config.edit.method).predicted_frame_calls(config, frames, latent_hw)
        if predicted is not None:
            calls["edit"] = predicted
    elif command == "reconstruct":
        calls["reconstruction"] = edit_steps(config) * frames * source_rows(config) * group_size(config, latent_hw)
    return calls
