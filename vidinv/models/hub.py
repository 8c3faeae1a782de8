"""Hub ids when the hub may be down: one reachability probe (a few seconds) instead of the hub
client's retries (minutes), the cache when it has the model, and a one-line error otherwise."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from vidinv.errors import VidinvError, first_line

HUB_TIMEOUT_S = 5.0  # one reachability probe of the hub, instead of its retries (minutes when it is down)
CONFIG_FILES = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json"]
log = logging.getLogger("vidinv")


@functools.cache
def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (one probe per process, HUB_TIMEOUT_S at most), or None."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(f"{constants.ENDPOINT}/api/models", timeout=HUB_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 (every network failure means the same here)
        return f"the hub {constants.ENDPOINT} cannot be reached ({type(err).__name__})"
    return None


def hub_local_only(repo_id: str, *, key: str = "model.pretrained", marker: str = "model_index.json") -> bool:
    """Whether to read the hub id `repo_id` from the hub cache only: with HF_HUB_OFFLINE=1, or when
    the hub cannot be reached and the cache has the model (its `marker` file; a one-line note).
    Unreachable and not cached: a one-line VidinvError about config `key` within seconds, never
    minutes of retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        problem = "HF_HUB_OFFLINE=1 is set"
    else:
        problem = _hub_unreachable()
        if problem is None:
            return False
    if isinstance(try_to_load_from_cache(repo_id, marker), str):
        if not constants.HF_HUB_OFFLINE:
            log.warning("note: %s; loading %r from the hub cache", problem, repo_id)
        return True
    raise VidinvError(
        f"{key}: {repo_id!r} is not in the hub cache and {problem}: give a local "
        f"{'diffusers folder or a .safetensors/.ckpt file' if key == 'model.pretrained' else 'folder'},"
        " or download it once online and then run with HF_HUB_OFFLINE=1"
    )


def hub_config_folder(repo_id: str) -> Path:
    """The local snapshot folder of hub id `repo_id` holding (at least) its config files, fetched
    when missing (the weights are left to `load_models`)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=CONFIG_FILES, local_files_only=hub_local_only(repo_id))
    except VidinvError:
        raise
    except Exception as err:  # noqa: BLE001 (not found, not cached, gated: all one line)
        raise VidinvError(f"model.pretrained: cannot get hub id {repo_id!r}: {first_line(err)}") from err
    return Path(folder)
