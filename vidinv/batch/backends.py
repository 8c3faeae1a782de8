"""Where a batch's clips run: here (`local`, `workers` processes) or as Ray tasks (`ray`).

Both run a clip's items in one worker (the inversion, then its edits) and hand the rows to
`on_rows` as they finish. Ray: the cluster named by RAY_ADDRESS, else a local one started with
`num_cpus=workers x threads` (no dashboard) and shut down afterwards; `threads` CPUs (default 1,
as on the local backend) per task, and one GPU per task when the
cluster has GPUs. The workers get this very vidinv package (`py_modules`); the
output folder must be one they can all write (a local cluster, or shared storage).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from vidinv.batch.manifest import Manifest
from vidinv.batch.plan import BatchItem
from vidinv.batch.run_items import error_line, failed_row, run_clip_items, run_item, torch_threads
from vidinv.errors import VidinvError

log = logging.getLogger("vidinv")
OnRows = Callable[[list[dict]], None]


def run_local(groups: list[list[BatchItem]], manifest: Manifest, on_rows: OnRows, *, quiet: bool) -> None:
    """Item by item in this process, or `workers` clips at once in spawned processes."""
    if manifest.workers == 1:
        with torch_threads(manifest.threads_per_clip):
            for item in (item for group in groups for item in group):
                on_rows([run_item(item, quiet=quiet)])
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    gpus = visible_gpus()
    if len(gpus) == 1:
        log.warning("note: the %d workers share this machine's one GPU (a model each)", manifest.workers)
    claim = (claim_gpu, (context.Value("i", 0), gpus)) if len(gpus) > 1 else (None, ())
    with ProcessPoolExecutor(manifest.workers, mp_context=context, initializer=claim[0], initargs=claim[1]) as pool:
        futures = {pool.submit(run_clip_items, group, True, manifest.threads_per_clip): group for group in groups}
        for future in as_completed(futures):
            on_rows(_rows_or_failure(futures[future], future.result))


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (none without CUDA)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (named or [str(i) for i in range(count)])[:count]


def claim_gpu(counter, gpus: list[str]) -> None:
    """A local worker's initializer: worker i sees only GPU i mod N (CUDA_VISIBLE_DEVICES, set before
    torch touches CUDA in the spawned process), so workers spread over the GPUs instead of all
    running on the first."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]


def _rows_or_failure(group: list[BatchItem], result: Callable[[], list[dict]]) -> list[dict]:
    """The clip's rows, or every item failed with the error when the worker itself failed."""
    try:
        return result()
    except Exception as err:  # a worker lost (killed, out of memory): its items failed, the batch goes on
        return [failed_row(item, error_line(err)) for item in group]


def _connect_ray(num_cpus: int) -> bool:
    """ray.init on RAY_ADDRESS's cluster, or a local one with `num_cpus`; True when this call started Ray."""
    try:
        import ray
    except ImportError as err:
        raise VidinvError("backend: ray needs Ray installed: pip install 'vidinv[ray]'") from err
    if ray.is_initialized():
        return False
    import vidinv

    options = {"include_dashboard": False, "runtime_env": {"py_modules": [vidinv]}, "log_to_driver": False}
    if not os.environ.get("RAY_ADDRESS"):
        options["num_cpus"] = num_cpus
    ray.init(**options)
    return True


def run_ray(groups: list[list[BatchItem]], manifest: Manifest, on_rows: OnRows) -> None:
    """One Ray task per clip (`threads_per_clip` CPUs each); rows handed on as the tasks finish."""
    import ray

    threads = manifest.threads_per_clip
    started = _connect_ray(manifest.workers * threads)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(run_clip_items)
        pending = {task.remote(group, True, threads): group for group in groups}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            on_rows(_rows_or_failure(pending.pop(ref), lambda ref=ref: ray.get(ref)))
    finally:
        if started:
            ray.shutdown()
