"""What a model source string names: a local path, or a hub id."""

from __future__ import annotations

from pathlib import Path

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")  # a checkpoint in one file (`from_single_file`)


def looks_like_path(name: str) -> bool:
    """True for an existing path or one written as a path; `org/model` (a hub id) is not."""
    return Path(name).exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
