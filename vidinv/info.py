"""`vidinv info`: what this machine offers vidinv (versions, devices, decoders, attention backends)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def available_decoders() -> list[str]:
    """Video decoders vidinv can use, in the order it tries them."""
    return [name for name, module in (("decord", "decord"), ("pyav", "av")) if importlib.util.find_spec(module)]


def available_attention_backends() -> list[str]:
    """The attention backends that run here: xformers only when a call on the CUDA device works."""
    import torch

    from vidinv.attention.backends import xformers_available, xformers_problem

    backends = ["sdpa", "naive"] if hasattr(torch.nn.functional, "scaled_dot_product_attention") else ["naive"]
    if xformers_available() and torch.cuda.is_available() and xformers_problem() is None:
        backends.insert(0, "xformers")
    return backends


def devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def registered_methods() -> list[tuple[str, str]]:
    """Rows naming the registered plug-ins (built-ins, `register_*` calls, entry points)."""
    from vidinv.registry import EDIT_METHODS, INVERSION_METHODS, SAMPLERS

    return [
        ("inversion methods", ", ".join(INVERSION_METHODS.names())),
        ("edit methods", ", ".join(EDIT_METHODS.names())),
        ("samplers", ", ".join(SAMPLERS.names())),
    ]


def environment_report() -> str:
    rows = [("vidinv", _version("vidinv")), ("python", platform.python_version())]
    rows += [(name, _version(name)) for name in ("torch", "diffusers", "transformers", "av", "decord", "xformers")]
    rows += [
        ("devices", ", ".join(devices())),
        ("video decoders", ", ".join(available_decoders()) or "none"),
        ("attention backends", ", ".join(available_attention_backends())),
        *registered_methods(),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
