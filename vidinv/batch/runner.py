"""`vidinv batch MANIFEST [key=value ...]`: every item of a manifest, a summary, a gallery.

Exit status: 0 when every item is done (or was complete already), 1 when any item failed (the
others still run), 2 for a bad manifest (nothing runs).
"""

from __future__ import annotations

import logging
import time

from vidinv.batch.backends import run_local, run_ray
from vidinv.batch.manifest import load_manifest
from vidinv.batch.plan import plan_items
from vidinv.batch.report import write_report
from vidinv.run_lock import prepare_output_dir

log = logging.getLogger("vidinv")


def run_batch(manifest_path: str, overrides: list[str] | None = None, *, quiet: bool = True) -> dict:
    """Run (or finish) the manifest's batch; return its summary (as written to summary.json)."""
    started = time.perf_counter()
    manifest = load_manifest(manifest_path, overrides)
    groups = plan_items(manifest)
    out = prepare_output_dir(manifest.output_dir, overwrite=True)  # reruns add to and finish a batch
    count = sum(len(group) for group in groups)
    rows: dict[str, dict] = {}

    def collect(clip_rows: list[dict]) -> None:
        for row in clip_rows:
            rows[row["item"]] = row
            detail = row["error"] if row["status"] == "failed" else f"{row['seconds']:.1f}s"
            log.info("[%d/%d] %s: %s (%s)", len(rows), count, row["item"], row["status"], detail)

    if manifest.backend == "ray":
        run_ray(groups, manifest, collect)
    else:
        run_local(groups, manifest, collect, quiet=quiet)
    ordered = [rows[item.name] for group in groups for item in group]
    meta = {
        "manifest": str(manifest.path),
        "output_dir": str(out),
        "backend": manifest.backend,
        "workers": manifest.workers,
        "threads": manifest.threads,
        "clips": len(groups),
        "records": len({item.config.runtime.record_dir for group in groups for item in group}),
        "seconds": round(time.perf_counter() - started, 4),
    }
    return write_report(out, ordered, meta)


def run_cli(args) -> int:
    summary = run_batch(args.manifest, args.overrides, quiet=args.quiet)
    t = summary["totals"]
    print(
        f"vidinv: batch of {t['items']} items ({summary['clips']} clip(s), {summary['records']} inversion records): "
        f"{t['done']} done, {t['skipped']} skipped, {t['failed']} failed; UNet frame-calls "
        f"{t['frame_calls']['inversion']} inversion + {t['frame_calls']['edit']} edit in {summary['seconds']:.1f}s "
        f"-> {summary['output_dir']}/index.html"
    )
    return 1 if t["failed"] else 0
