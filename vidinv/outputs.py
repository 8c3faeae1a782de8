"""The run folder: one run at a time, refuse to clobber, write every file under a temporary name,
rename when complete."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

from vidinv.errors import VidinvError, first_line

PARTIAL_TAG = ".partial"


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
    try:
        remove(tmp)
        yield tmp
        publish(tmp, final)
    except OSError as err:
        with contextlib.suppress(OSError):
            remove(tmp)
        raise VidinvError(f"{final}: cannot be written ({err.strerror or first_line(err)})") from err
    except BaseException:
        remove(tmp)
        raise


def publish(tmp: Path, final: Path) -> None:
    """Give the complete file or folder `tmp` its final name (replacing what was there)."""
    remove(final)
    os.replace(tmp, final)


def check_writable(final: str | Path) -> Path:
    """A one-line VidinvError now, rather than after the work, when `final` cannot be written
    (its folder is created; a probe file is written under the partial name and removed)."""
    with atomic_path(final) as tmp:
        tmp.touch()
    Path(final).unlink()
    return Path(final)


def remove(path: Path) -> None:
    """Remove a file or a folder tree (a symlink itself, not its target)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def finite_or_null(data):
    """`data` with every non-finite float (nan, inf) replaced by None, in nested dicts and lists."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(value) for value in data]
    return data


def json_text(data) -> str:
    """Strict indented JSON (RFC 8259): a non-finite number becomes null, never NaN or Infinity."""
    return json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n"


def write_json(path: str | Path, data: dict) -> Path:
    """Write `data` as strict indented JSON (`json_text`), atomically."""
    text = json_text(data)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
