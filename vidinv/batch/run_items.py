"""Run a clip's items through the edit job, one after the other; each gives one summary row.

An item whose folder already holds every file of the edit job, written from the same config, is
not run again (status `skipped`); a failure is caught and reported in the row (status `failed`,
its one-line error) and the next item goes on. This is what one worker (a process or a Ray task)
runs, so a clip's record folder is only ever used by one worker.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from vidinv.batch.plan import BatchItem
from vidinv.config import to_yaml
from vidinv.errors import VidinvError, first_line, out_of_memory

METRIC_KEYS = ("warp_error_source", "warp_error_edited", "frame_change_edited", "psnr_vs_source_db")


def is_complete(item: BatchItem) -> bool:
    """The item's folder has every file the edit job writes, from this very config."""
    from vidinv.jobs.edit import writes

    out = Path(item.config.runtime.output_dir)
    written = out / "config.yaml"
    return (
        all((out / name).exists() for name in writes(item.config.runtime.codec))
        and written.is_file()
        and written.read_text(encoding="utf-8") == to_yaml(item.config)
    )


def describe(item: BatchItem) -> dict:
    """The row's columns that come from the manifest."""
    c = item.config
    return {
        "item": item.name,
        "clip": item.clip,
        "source_prompt": item.source_prompt,
        "target_prompt": item.target_prompt,
        "inversion": c.inversion.method,
        "method": c.edit.method,
        "setup": item.setup,
        "grid": dict(item.grid),
        **({"benchmark": dict(item.labels)} if item.labels else {}),
    }


def row_from_metrics(item: BatchItem, status: str) -> dict:
    """A finished item's row, from its metrics.json."""
    metrics = json.loads((Path(item.config.runtime.output_dir) / "metrics.json").read_text(encoding="utf-8"))
    calls, clip = metrics["frame_calls"], metrics["temporal_consistency"]
    peaks = [v for v in metrics.get("peak_memory", {}).values() if isinstance(v, (int, float))]
    return {
        **describe(item),
        "status": status,
        "seconds": metrics["seconds"]["total"],
        "frame_calls_inversion": calls["inversion"],
        "frame_calls_edit": calls["edit"],
        "record_reused": metrics["record_reused"],
        **{key: clip.get(key) for key in METRIC_KEYS},
        "peak_memory_mb": max(peaks) if peaks else None,
        # every number of the clip comparison (masked, CLIP ones included) and the per-frame warp errors
        "metrics": {
            k: v for k, v in clip.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
        },
        "per_frame": metrics.get("per_frame", {}),
        "error": "",
    }


def error_line(err: BaseException) -> str:
    """A failure in one line: the message of a VidinvError (an allocation failure made one), else
    the exception's class and message."""
    error = err if isinstance(err, VidinvError) else out_of_memory(err)
    return str(error) if error is not None else f"{type(err).__name__}: {first_line(err)}"


def failed_row(item: BatchItem, error: str, seconds: float = 0.0) -> dict:
    return {**describe(item), "status": "failed", "seconds": round(seconds, 4), "error": error}


def run_item(item: BatchItem, *, quiet: bool = True) -> dict:
    """Run one item unless it is complete; never raises for the item's own failure (Ctrl-C does)."""
    from vidinv.jobs import edit

    if is_complete(item):
        return row_from_metrics(item, "skipped")
    started = time.perf_counter()
    try:
        edit.run(item.config, quiet=quiet)
    except Exception as err:  # one item's failure is its row's; the batch goes on
        return failed_row(item, error_line(err), time.perf_counter() - started)
    return row_from_metrics(item, "done")


def run_clip_items(items: list[BatchItem], quiet: bool = True, threads: int | None = None) -> list[dict]:
    """Run a clip's items in order (the first one that needs the inversion makes the record), with
    `threads` torch CPU threads (None = as they are)."""
    with torch_threads(threads):
        return [run_item(item, quiet=quiet) for item in items]


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op CPU threads set to `threads` inside the block (results on the CPU depend on
    it in the last bits: the same count gives the same bytes on every backend)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
