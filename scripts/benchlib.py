"""Shared measurement helpers for the bench scripts: peak memory, timing, a table and a JSON record.

Peak memory is the growth over the level at the start of the measured call:
- CUDA: `torch.cuda.max_memory_allocated` after resetting the peak (tensors only, exact).
- CPU: the process's resident set size sampled every `interval` seconds in a background thread
  (/proc/self/statm; torch's CPU allocations are invisible to tracemalloc and VmHWM cannot be
  reset). glibc is set to mmap large blocks and freed heap is handed back to the OS first
  (mallopt, malloc_trim) so RSS follows live memory and earlier runs do not hide growth. Spikes shorter than the interval can be missed.
`PeakMemory` splits one call into stages (`stage(name)`), each with its own peak; `count_flops`
counts a call's FLOPs; `format_table` prints rows, `write_results` writes them as JSON.

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


_MALLOC_FIXED = False


def track_live_memory() -> None:
    """Make glibc mmap allocations >= 64 KiB and trim freed heap above 64 KiB (fixed thresholds,
    once per process), so RSS follows live tensors: otherwise freed pages stay resident, a call
    reuses them, and RSS reads the heap's high-water mark instead of the call's live peak."""
    global _MALLOC_FIXED
    if _MALLOC_FIXED or _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return
    _LIBC.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
    _LIBC.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    _MALLOC_FIXED = True


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


class PeakMemory:
    """Peak memory growth (bytes) over the level at entry, per stage of the measured block.

    `stage(name)` ends the stage in progress and starts `name` (the block starts in stage
    `stage`, default "all"); `peaks` maps each stage to its peak, `peak` is the largest. CUDA: the allocator's
    peak, reset at each switch. CPU: RSS sampled every `interval` seconds in a background
    thread; freed heap is handed back to the OS at each switch (malloc_trim, no gc pass, so
    switching costs little inside a timed call) so a stage does not inherit its predecessor's
    freed pages.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.001, stage: str = "all"):
        self.device, self.interval = torch.device(device), interval
        self.base, self.current, self.peaks = 0, stage, {}
        self._stop = threading.Event()

    def _level(self) -> int:
        return rss_bytes() or 0

    def _note(self, level: int) -> None:
        self.peaks[self.current] = max(self.peaks.get(self.current, 0), level - self.base)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._note(self._level())
            time.sleep(self.interval)

    def __enter__(self):
        release_freed_memory()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            track_live_memory()
            self.base = self._level()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self.peaks[self.current] = 0
        return self

    def _close_stage(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self._note(torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._note(self._level())

    def stage(self, name: str) -> None:
        self._close_stage()
        if self.device.type != "cuda" and _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
            _LIBC.malloc_trim(0)
        self.current = name
        self.peaks[name] = max(self.peaks.get(name, 0), 0)

    def __exit__(self, *exc) -> None:
        self._close_stage()
        if self.device.type != "cuda":
            self._stop.set()
            self._thread.join()

    @property
    def available(self) -> bool:
        return self.device.type == "cuda" or rss_bytes() is not None

    @property
    def peak(self) -> int:
        return max(self.peaks.values(), default=0)

    def peaks_mb(self) -> dict[str, float | None]:
        return {k: (v / MB if self.available else None) for k, v in self.peaks.items()}


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
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds = time.perf_counter() - start
    return Measurement(seconds, memory.peak / MB if memory.available else None, result)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of fn() by torch's FlopCounterMode (matmuls, convolutions, attention;
    CPU flash SDPA counted with torch's SDPA formula). Element-wise ops are not counted."""
    from torch.utils import flop_counter

    def cpu_flash_sdpa(query, key, value, *args, out_val=None, **kwargs):
        return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)

    cpu_flash_sdpa._get_raw = True  # takes tensors, not shapes
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_sdpa}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def set_threads(threads: int) -> None:
    """torch's CPU intra-op threads (0 = leave torch's default)."""
    if threads:
        torch.set_num_threads(threads)


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


Column = str | tuple[str, str, str]  # key, or (key, header, format spec)


def format_table(rows: Sequence[dict], columns: Sequence[Column] | None = None) -> str:
    """A plain-text table of dict rows. A column is a key (header = key; floats with 3
    decimals) or (key, header, format spec); missing values print as '-'."""
    specs = [(c, c, "") if isinstance(c, str) else c for c in (columns or rows[0].keys())]

    def cell(value, spec: str) -> str:
        if value is None:
            return "-"
        if spec:
            return format(value, spec)
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    cells = [[cell(row.get(key), spec) for key, _, spec in specs] for row in rows]
    headers = [header for _, header, _ in specs]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def present_columns(rows: Sequence[dict], columns: Sequence[Column]) -> list[Column]:
    """The columns that have a value in at least one row."""
    key = lambda c: c if isinstance(c, str) else c[0]  # noqa: E731
    return [c for c in columns if any(r.get(key(c)) is not None for r in rows)]


def write_results(path: str | Path, name: str, args: dict, rows: list[dict], device, extra: dict | None = None) -> Path:
    """Write {bench, when, environment, args, **extra, rows} as JSON (atomically: no half-written file)."""
    from vidinv.outputs import write_json

    record = {
        "bench": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(device),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()},
        **(extra or {}),
        "rows": rows,
    }
    return write_json(path, record)
