"""`vidinv info`: what this machine offers vidinv (versions, devices, decoders, attention backends)."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
import warnings

from vidinv.errors import first_line


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def available_decoders() -> list[str]:
    """Video decoders vidinv can use, in the order it tries them."""
    return [name for name, module in (("decord", "decord"), ("pyav", "av")) if importlib.util.find_spec(module)]


def xformers_available() -> bool:
    """xformers is installed (whether it runs here is `xformers_problem`'s question)."""
    return importlib.util.find_spec("xformers") is not None


@functools.cache
def xformers_problem() -> str | None:
    """Why xformers cannot run on this machine's CUDA device, in a few words; None when it runs. An
    import is not enough: a wheel built for another torch imports (with a warning) and raises
    `NotImplementedError: No operator found` at its first call, so a tiny call is made once."""
    if not xformers_available():
        return "xformers is not installed (pip install xformers)"
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import xformers.ops as xops

            q = torch.zeros(1, 8, 1, 8, device="cuda", dtype=torch.float16)
            xops.memory_efficient_attention(q, q, q)
    except Exception as err:  # any failure of the probe means: not usable here
        return f"xformers does not run here ({type(err).__name__}: {first_line(err)[:160]})"
    return None


def available_attention_backends() -> list[str]:
    """The attention backends that run here: xformers only when a call on the CUDA device works."""
    import torch

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
