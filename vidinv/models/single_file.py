"""Single-file SD 1.x / 2.x / SDXL checkpoints (.safetensors / .ckpt, original layout), converted by diffusers.

The family (and so the diffusers pipeline class) comes from `single_file_config` when it is
readable, else from the checkpoint's keys as diffusers infers it. SD3 / Flux transformer files
load in `vidinv.models.flow` (with `check_config_folder` and `hub_hint` from here).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidinv.errors import VidinvError, first_line
from vidinv.models.paths import looks_like_path

CONFIG_HINT = (
    "set model.single_file_config to a diffusers folder (with model_index.json) or hub id holding the"
    " component configs; without it diffusers fetches them from the hub"
)


def _is_hub_error(err: BaseException) -> bool:
    """True when the hub (offline, unreachable, missing repo) is why loading failed."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

    return isinstance(err, (EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled, ConnectionError))


def hub_hint(err: BaseException, config: str | None) -> str:
    """What to do when the hub is why loading failed; nothing otherwise."""
    if not _is_hub_error(err):
        return ""
    if config is None:
        return f" ({CONFIG_HINT})"
    return f" (model.single_file_config {config!r} is a hub id: it needs network or a filled HF cache)"


def check_config_folder(config: str) -> None:
    """A local config folder must exist and be a diffusers pipeline folder (model_index.json + components)."""
    if not Path(config).is_dir():
        raise VidinvError(f"model.single_file_config: folder {config} does not exist")
    if not (Path(config) / "model_index.json").is_file():
        raise VidinvError(
            f"model.single_file_config: folder {config} has no model_index.json"
            " (use a diffusers pipeline folder, e.g. one written by save_pretrained)"
        )


def _pipeline_class(path: str, config: str | None):
    """StableDiffusionPipeline or StableDiffusionXLPipeline, by the config's family or the file's keys."""
    import diffusers

    from vidinv.models.families import FAMILIES
    from vidinv.models.family import family_name_of_checkpoint, family_of_folder

    family = family_of_folder(config) if config is not None else None
    name = family.name if family is not None else family_name_of_checkpoint(path)
    return getattr(diffusers, FAMILIES[name].pipeline)


def _from_single_file(path: str, dtype: torch.dtype, config: str | None):
    """diffusers' from_single_file of the family's pipeline; a local config folder keeps it off the hub."""
    local = config is not None and looks_like_path(config)
    if local:
        check_config_folder(config)
    pipeline = _pipeline_class(path, config)
    extra = {"safety_checker": None} if pipeline.__name__ == "StableDiffusionPipeline" else {}
    return pipeline.from_single_file(path, config=config, torch_dtype=dtype, local_files_only=local, **extra)


def load_single_file(path: str, dtype: torch.dtype, config: str | None = None) -> dict:
    """Components of an SD 1.x/2.x/SDXL single-file checkpoint; `config` names where the component configs are."""
    from diffusers import DDIMScheduler
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    if not Path(path).is_file():
        raise VidinvError(f"model.pretrained: checkpoint file {path} does not exist")
    try:
        pipe = _from_single_file(path, dtype, config)
    except (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError) as err:
        raise VidinvError(
            f"model.pretrained: cannot load checkpoint {path}: {first_line(err)}{hub_hint(err, config)}"
        ) from err
    parts = {name: getattr(pipe, name, None) for name in ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2")}
    parts = {name: part for name, part in parts.items() if part is not None}
    return parts | {"unet": pipe.unet, "vae": pipe.vae, "scheduler": DDIMScheduler.from_config(pipe.scheduler.config)}
