"""LoRA files on any family (`model.lora`), loaded as diffusers' `load_lora_weights` reads them.

    specs = lora_specs([{"path": "style.safetensors", "scale": 0.8}, "detail.safetensors"])
    apply_loras(models, specs, fuse=True)        # after loading; before frame attention and offload
    models.loras                                 # what was applied (the record's fingerprint reads it)

A file is a `.safetensors` LoRA in a layout diffusers reads: its own (`unet.` / `transformer.` /
`text_encoder.` keys, peft's `lora_A` / `lora_B`), Kohya's (`lora_unet_` / `lora_te_` keys,
`lora_down` / `lora_up` / `alpha`) or the original checkpoints' names diffusers converts (Flux's,
Wan's). It is loaded by the family's diffusers pipeline class (`Family.lora_loader`, else its
`pipeline`): its `load_lora_weights(path, adapter_name=NAME)`, one adapter per file, then
`set_adapters(names, scales)` composes them. A flow model is held as that pipeline; a UNet model's
components (vidinv's `Models`) are wrapped in one just to call its loader (the same modules, no
copy). With `model.lora_fuse` (the default) the scaled LoRAs are merged into the weights
(`fuse_lora`) and peft's LoRA layers removed (`unload_lora_weights`): the model runs as fast as the
base model, its modules the base model's classes. Unfused, peft's LoRA layers stay and add their
low-rank product at every call (fused and unfused agree to float rounding: ~1e-6 relative in fp32).

Refused in one line: a missing file or one that is no .safetensors (`vidinv.config.validate`), a
LoRA for another family (its keys name another family's layers, `Family.lora_keys`: checked from
the file's header by `vidinv plan` and the fit check before loading, and again when loading), and
one whose tensors diffusers cannot load into the model or that changes none of its layers, or only
some (a LoRA for another checkpoint of the family: other widths or blocks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from vidinv.config import LoraSpec, lora_specs
from vidinv.errors import VidinvError, first_line
from vidinv.models.families import FAMILIES, Family, family_record

__all__ = ["LoraSpec", "apply_loras", "check_lora_family", "lora_families", "lora_specs"]
log = logging.getLogger("vidinv")
_HASHES: dict[tuple, str] = {}  # (real path, size, mtime) -> sha256: each file hashed once a process


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, computed once per process for each (path, size, mtime)."""
    real = os.path.realpath(os.path.expanduser(str(path)))
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(real, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def lora_keys(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a LoRA file (its header only, no tensor read)."""
    from safetensors import safe_open

    try:
        with safe_open(os.path.expanduser(str(path)), framework="pt") as fh:
            return {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except Exception as err:  # safetensors' own errors have several classes: all mean an unreadable file
        raise VidinvError(f"model.lora: {path} is not a readable .safetensors file: {first_line(err)}") from err


def lora_families(keys) -> tuple[list[Family], str | None]:
    """The families whose LoRA layouts (`Family.lora_keys`) name every key of `keys` that some
    family's layout names, and the first such key; ([], None) when no family's layout names any
    (an unknown layout: left to diffusers) or no family names them all (a mixed file)."""
    recognised = None
    families = list(FAMILIES.values())
    for key in keys:
        matching = [f for f in FAMILIES.values() if any(re.search(p, key) for p in f.lora_keys)]
        if not matching:
            continue
        recognised = recognised or key
        families = [f for f in families if f in matching]
    return (families, recognised) if recognised and families else ([], None)


def _names(families: list[Family]) -> str:
    return " / ".join(f.display for f in families)


def check_lora_family(path: str | Path, family: Family, source: str = "") -> None:
    """A one-line error when the LoRA file's keys name another family's layers (`lora_families`),
    naming both families; nothing for a file of `family` or of a layout no family names."""
    family = family.traits
    families, key = lora_families(lora_keys(path))
    if families and family not in families:
        of = f" (model.pretrained: {source})" if source else ""
        raise VidinvError(
            f"model.lora: {path} is a LoRA for {_names(families)} (its key {key}), not for {family.display}{of}"
        )


def check_lora_files(model_config, family: Family | str) -> None:
    """`check_lora_family` for every file of `model.lora` (the plan's check, before loading)."""
    family = family_record(family.traits if isinstance(family, Family) else family)
    for spec in lora_specs(model_config.lora):
        check_lora_family(spec.path, family, model_config.pretrained)


def lora_weight_bytes(model_config, itemsize: int) -> int:
    """Device bytes of the LoRA layers that stay beside the weights: unfused, every tensor of every
    file at `itemsize` bytes an element (the model's dtype); fused, none (merged into the weights)."""
    if model_config.lora_fuse:
        return 0
    total = 0
    for spec in lora_specs(model_config.lora):
        for key, shape in lora_keys(spec.path).items():
            if "alpha" not in key.rsplit(".", 1)[-1]:
                total += itemsize * int(torch.Size(shape).numel())
    return total


def lora_pipeline(models):
    """The diffusers pipeline whose loader applies LoRAs to `models`: a flow model's own; for a UNet
    model, the family's pipeline class (`Family.lora_loader`, else `pipeline`) around its components,
    the same modules. That class's constructor may rewrite an old UNet's or scheduler's config
    (diffusers' deprecation fixes): their configs are put back as they were."""
    import inspect

    import diffusers

    pipeline = getattr(models, "pipeline", None)
    if pipeline is not None and hasattr(pipeline, "load_lora_weights"):
        return pipeline
    family = models.family.traits
    cls = getattr(diffusers, family.lora_loader or family.pipeline)
    params = inspect.signature(cls.__init__).parameters
    parts = {name: getattr(models, name, None) for name in params if name != "self"}
    parts = {
        name: part
        for name, part in parts.items()
        if part is not None or params[name].default is inspect.Parameter.empty  # SD's safety checker: None
    }
    if "requires_safety_checker" in params:
        parts["requires_safety_checker"] = False
    saved = {name: part._internal_dict for name, part in parts.items() if hasattr(part, "_internal_dict")}
    with _quiet_diffusers():
        pipe = cls(**parts)
    for name, config in saved.items():
        parts[name]._internal_dict = config
    return pipe


class _Caught(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextmanager
def _quiet_diffusers():
    """diffusers' log records (its warnings about keys it did not load among them) caught, not printed;
    peft's warning that a model holds several adapters (what model.lora asks for) not shown."""
    lib = logging.getLogger("diffusers")
    handlers, level = lib.handlers[:], lib.level
    caught = _Caught()
    lib.handlers[:] = [caught]
    lib.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            yield caught
    finally:
        lib.handlers[:] = handlers
        lib.setLevel(level)


def _kind(path) -> str:
    """' (a LoRA for FAMILIES)' when the file's keys say whose it is, else ''."""
    families, _ = lora_families(lora_keys(path))
    return f" (a LoRA for {_names(families)})" if families else ""


def _detail(err: Exception) -> str:
    """The first line of diffusers' / torch's error that names a tensor (a size mismatch), else its first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "mismatch" in line or "shape" in line]
    return (named or [first_line(err)])[0][:400]


def _lora_layers(pipe, name: str) -> int:
    """How many layers of the pipeline's loadable components hold adapter `name`."""
    count = 0
    for component in pipe._lora_loadable_modules:
        module = getattr(pipe, component, None)
        if isinstance(module, torch.nn.Module):
            count += sum(1 for m in module.modules() if name in (getattr(m, "lora_A", None) or {}))
    return count


def _expert_options(pipe, spec: LoraSpec) -> dict:
    """`load_lora_weights`' options for the entry's expert: Wan 2.2 A14B's low-noise `transformer_2`
    (diffusers' `load_into_transformer_2`); a one-line error on a model with one transformer."""
    if spec.expert == "high":
        return {}
    if getattr(pipe, "transformer_2", None) is None:
        raise VidinvError(
            f"model.lora: {spec.path}: expert {spec.expert} names the low-noise transformer_2 of a two-expert model"
            " (Wan 2.2 A14B); this model has one transformer (leave expert out)"
        )
    return {"load_into_transformer_2": True}


def apply_loras(models, specs: list[LoraSpec], *, fuse: bool = True) -> None:
    """Load `specs` into `models` (module docstring), in place; `models.loras` lists them (file hash,
    scale, fused) for the record's fingerprint."""
    if not specs:
        return
    family = models.family.traits
    pipe = lora_pipeline(models)
    names = []
    for spec in specs:
        check_lora_family(spec.path, family, models.source)
        name, options = spec.name, _expert_options(pipe, spec)
        with _quiet_diffusers() as caught:
            try:
                pipe.load_lora_weights(os.path.expanduser(spec.path), adapter_name=name, **options)
            except (ValueError, RuntimeError, KeyError, OSError, TypeError, AttributeError) as err:
                raise VidinvError(
                    f"model.lora: {spec.path}{_kind(spec.path)} does not fit {family.display} ({models.source}):"
                    f" {_detail(err)}"
                ) from err
        unloaded = [m for m in caught.messages if "unexpected keys" in m]
        if unloaded:
            raise VidinvError(
                f"model.lora: {spec.path}: some of its tensors fit no layer of {family.display} ({models.source}):"
                f" {first_line(unloaded[0])[:300]}"
            )
        if not _lora_layers(pipe, name):
            raise VidinvError(
                f"model.lora: {spec.path}{_kind(spec.path)} changes no layer of {family.display} ({models.source})"
            )
        names.append(name)
    with _quiet_diffusers():
        pipe.set_adapters(names, [spec.scale for spec in specs])
        if fuse:
            components = [c for c in pipe._lora_loadable_modules if getattr(pipe, c, None) is not None]
            pipe.fuse_lora(components=components, lora_scale=1.0, adapter_names=names)
            pipe.unload_lora_weights()
    models.loras = [
        {"sha256": file_sha256(s.path), "scale": float(s.scale), "fused": bool(fuse)}
        | ({"expert": s.expert} if s.expert != "high" else {})  # records of earlier LoRAs keep their fingerprint
        for s in specs
    ]
    log.info("model.lora: %s", ", ".join(f"{s.path} x {s.scale:g}" for s in specs))
