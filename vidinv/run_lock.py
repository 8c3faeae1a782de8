"""One run per output folder: `OUT/.vidinv.lock`, held (flock) by the run that writes there.

The lock file holds the holder's pid. A second run into the same folder gets a one-line
`VidinvError` naming the folder and that pid. The kernel drops the flock when its process dies
(kill -9 included), so a lock file left behind is taken over, with a one-line note naming the
dead holder. Locks are re-entrant within a process and released by `release_run_locks` (the
command line calls it when a command ends) or at exit; a folder the run created and left empty
(a run refused early) is removed with its lock.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
from pathlib import Path

from vidinv.errors import VidinvError
from vidinv.outputs import make_folder

LOCK_NAME = ".vidinv.lock"
log = logging.getLogger("vidinv")
_held: dict[Path, tuple[int, bool]] = {}  # folder -> (the flocked descriptor of its lock file, created here)


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError):
        return lock.read_text().strip()
    return ""


def acquire_run_lock(folder: str | Path) -> Path:
    """Create `folder` if needed and hold its lock until `release_run_lock`; the lock file's path."""
    created = not Path(folder).is_dir()
    folder = make_folder(folder).resolve()
    lock = folder / LOCK_NAME
    if folder in _held:
        return lock
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise VidinvError(f"{folder}: cannot write here ({err.strerror or type(err).__name__})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(lock) or "unknown"
            raise VidinvError(
                f"{folder}: another vidinv run (pid {holder}) is writing here; wait for it or choose another folder"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break  # the file is still the lock (not one a releasing run just unlinked)
        os.close(fd)
    previous = os.read(fd, 64).decode(errors="replace").strip()
    if previous and previous != str(os.getpid()):
        log.warning("note: %s: taking over the lock left by pid %s (no longer running)", folder, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[folder] = fd, created
    return lock


def release_run_lock(folder: str | Path) -> None:
    """Give up this process's lock of `folder` (nothing when it holds none)."""
    folder = Path(folder).resolve()
    fd, created = _held.pop(folder, (None, False))
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            (folder / LOCK_NAME).unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                folder.rmdir()


def release_run_locks() -> None:
    """Give up every lock this process holds."""
    for folder in list(_held):
        release_run_lock(folder)


def releases_run_locks(job):
    """Decorate a job: the locks it takes are released when it returns or raises (batch items and
    app edits run many jobs in one process)."""

    @functools.wraps(job)
    def run(*args, **kwargs):
        held = set(_held)
        try:
            return job(*args, **kwargs)
        finally:
            for folder in set(_held) - held:
                release_run_lock(folder)

    return run


def _forget_in_child() -> None:
    """A forked child does not hold its parent's locks (its copies of the descriptors are closed)."""
    for fd, _ in _held.values():
        os.close(fd)
    _held.clear()


atexit.register(release_run_locks)
os.register_at_fork(after_in_child=_forget_in_child)


def prepare_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Create the run folder and hold its lock (`vidinv.run_lock`); a non-empty one is refused
    unless `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VidinvError(f"runtime.output_dir: {path} exists and is not a folder")
    acquire_run_lock(path)
    if any(p.name != LOCK_NAME for p in path.iterdir()) and not overwrite:
        raise VidinvError(f"runtime.output_dir: {path} is not empty (set runtime.overwrite=true to replace its files)")
    return path
