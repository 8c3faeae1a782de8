"""Shared measurement helpers for the bench scripts: peak memory, timing, a table and a JSON record.

Peak memory is the growth over the level at the start of the measured call:
- CUDA: `torch.cuda.max_memory_allocated` after resetting the peak (tensors only, exact).
- CPU: the process's resident set size sampled every `interval` seconds in a background thread
  (/proc/self/statm; torch's CPU allocations are invisible to tracemalloc and VmHWM cannot be
  reset). Freed heap is handed back to the OS first (glibc malloc_trim) so earlier runs do not
  hide growth. Spikes shorter than the interval can be missed.

Importing this module also puts the repository root on sys.path, so scripts run from a checkout.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MB = 2**20


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def release_freed_memory() -> None:
    """Collect garbage and return freed heap to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """Peak RSS growth over the level at entry, sampled in a background thread."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes() or 0)
            time.sleep(self.interval)

    def __enter__(self):
        release_freed_memory()
        self.base = self.peak = rss_bytes() or 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, rss_bytes() or 0)
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    seconds: float
    peak_mb: float | None  # growth over the start of the call; None where it cannot be measured
    result: object = None


def measure(fn: Callable[[], object], device: torch.device | str) -> Measurement:
    """Wall time and peak memory growth of one call of `fn` on `device`."""
    device = torch.device(device)
    release_freed_memory()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds = time.perf_counter() - start
        return Measurement(seconds, (torch.cuda.max_memory_allocated(device) - base) / MB, result)
    with RssSampler() as sampler:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return Measurement(seconds, sampler.growth / MB if rss_bytes() is not None else None, result)


def environment(device: torch.device | str) -> dict:
    """What the numbers were measured on."""
    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of dict rows (floats with 3 significant decimals)."""
    columns = list(columns or rows[0].keys())

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_results(path: str | Path, name: str, args: dict, rows: list[dict], device) -> Path:
    """Write {bench, when, environment, args, rows} as JSON (atomically: no half-written file)."""
    from vidinv.outputs import write_json

    record = {
        "bench": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(device),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()},
        "rows": rows,
    }
    return write_json(path, record)
