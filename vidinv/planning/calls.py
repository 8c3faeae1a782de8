"""Frame-calls of a run per stage (the unit of vidinv's cost model), added up from each method's own
formula: the inversion's (`vidinv.inversion.costs.Costs.inversion_calls`, with the inversion method's
`evaluations_per_step`), the edit method's `predicted_frame_calls`; and the planner's constants."""

from __future__ import annotations

from vidinv.config import Config
from vidinv.inversion.costs import Costs

MB = 2**20
LATENT_CHANNELS = 4
WORKING_LATENTS = 6  # latent-sized tensors the samplers keep beside the record (z, eps, pair, ...)
# RSS of a process before its tensors: python, torch, diffusers, transformers, av (+ cv2 and the
# clip comparison for the commands that write videos). Measured with scripts/bench_memory.py on
# the tiny model: `edit` 650-700 MB on 1 frame; `invert` 549 MB at 16 frames of 128x128, of which
# ~60 MB are its tensors
HOST_BASELINE_BYTES = {"edit": 640 * MB, "reconstruct": 640 * MB, "invert": 500 * MB}


def edit_method_class(config: Config):
    """The class of the configured edit method."""
    from vidinv.editing import get_edit_method

    return get_edit_method(config.edit.method)


def frame_calls(
    config: Config, command: str, frames: int, latent_hw: tuple[int, int], store_in_memory: bool = True, **context
) -> dict[str, int]:
    """Model frame-calls per stage of `command` (edit | invert | reconstruct); `context` goes to the
    edit method's `predicted_frame_calls` (e.g. `family`)."""
    costs = Costs(config)
    calls = {"inversion": costs.inversion_calls(frames, latent_hw)}
    if command == "edit":
        method = edit_method_class(config)
        if method.inversion_free:
            calls["inversion"] = 0
        predicted = method.predicted_frame_calls(config, frames, latent_hw, store_in_memory=store_in_memory, **context)
        if predicted is not None:
            calls["edit"] = predicted
    elif command == "reconstruct":
        calls["reconstruction"] = costs.reconstruction_calls(frames, latent_hw)
    return calls
