"""The model's parametrisation (the scheduler's `prediction_type`) converted to eps.

For a latent z at noise level abar (z = sqrt(abar) x0 + sqrt(1 - abar) eps), as diffusers'
DDIMScheduler.step / DDIMInverseScheduler.step do with the level of the latent being stepped:

    epsilon:       eps = m
    v_prediction:  eps = sqrt(abar) m + sqrt(1 - abar) z           (Salimans & Ho 2022, v = sqrt(abar) eps - sqrt(1 - abar) x0)
    sample:        eps = (z - sqrt(abar) m) / sqrt(1 - abar)

The steps form x0 from eps, except at zero SNR (abar = 0: the first level of a zero-terminal-SNR grid,
CogVideoX's), where z is pure noise and x0 comes from the prediction itself (`to_x0`).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def to_eps(pred: torch.Tensor, z: torch.Tensor, abar: torch.Tensor, prediction_type: str = "epsilon") -> torch.Tensor:
    """eps of the latent z at level abar from the model's prediction `pred` (see the module docstring)."""
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":
        return abar**0.5 * pred + (1 - abar) ** 0.5 * z
    if prediction_type == "sample":
        return (z - abar**0.5 * pred) / (1 - abar) ** 0.5
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")


def to_x0(pred: torch.Tensor, z: torch.Tensor, abar: torch.Tensor, prediction_type: str = "epsilon") -> torch.Tensor:
    """x0 of the latent z at level abar from the model's prediction, directly: at zero SNR (abar = 0,
    a zero-terminal-SNR grid's first level: CogVideoX's) z is pure noise and only v or x0 say x0
    (v: x0 = sqrt(abar) z - sqrt(1 - abar) m, as diffusers' schedulers step it; eps: undefined there)."""
    if prediction_type == "epsilon":
        return (z - (1 - abar) ** 0.5 * pred) / abar**0.5
    if prediction_type == "v_prediction":
        return abar**0.5 * z - (1 - abar) ** 0.5 * pred
    if prediction_type == "sample":
        return pred
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
