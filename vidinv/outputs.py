"""The run folder: one run at a time, refuse to clobber, write every file under a temporary name,
rename when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from vidinv.errors import VidinvError

PARTIAL_TAG = ".partial"


def prepare_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Create the run folder and hold its lock (`vidinv.run_lock`); a non-empty one is refused
    unless `overwrite`."""
    from vidinv.run_lock import LOCK_NAME, acquire_run_lock

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VidinvError(f"runtime.output_dir: {path} exists and is not a folder")
    acquire_run_lock(path)
    if any(p.name != LOCK_NAME for p in path.iterdir()) and not overwrite:
        raise VidinvError(f"runtime.output_dir: {path} is not empty (set runtime.overwrite=true to replace its files)")
    return path


def make_folder(path: str | Path) -> Path:
    """mkdir -p, or a one-line error naming the folder when it cannot be created (e.g. under /proc)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VidinvError(f"{path}: cannot create this folder ({err.strerror or type(err).__name__})") from None
    return path


def partial_name(final: str | Path) -> Path:
    """The temporary name a file has while it is being written (same folder, same extension)."""
    final = Path(final)
    return final.with_name(f"{final.stem}{PARTIAL_TAG}{final.suffix}")


@contextlib.contextmanager
def atomic_path(final: str | Path):
    """Yield a temporary path to write; it becomes `final` only if the block finishes.

    On any error (Ctrl-C included) the partial file or folder is removed, so nothing that
    looks finished is left behind.
    """
    final = Path(final)
    make_folder(final.parent)
    tmp = partial_name(final)
    _remove(tmp)
    try:
        yield tmp
        _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
