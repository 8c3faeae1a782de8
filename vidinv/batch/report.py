"""A batch's summary: summary.csv, summary.json, the comparison of its methods (report.csv,
report_methods.csv, report.json, charts/: `vidinv.batch.compare`) and index.html: the per-method
table, the charts, the per-item rows and a gallery of the side-by-side videos."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from vidinv.batch.compare import comparison_html, write_comparison
from vidinv.batch.plan import ITEMS_DIR
from vidinv.outputs import write_json, write_text

CSV_COLUMNS = (
    "item",
    "clip",
    "source_prompt",
    "target_prompt",
    "inversion",
    "method",
    "grid",
    "status",
    "seconds",
    "frame_calls_inversion",
    "frame_calls_edit",
    "record_reused",
    "warp_error_source",
    "warp_error_edited",
    "frame_change_edited",
    "psnr_vs_source_db",
    "error",
)
STATUSES = ("done", "skipped", "failed")


def totals(rows: list[dict]) -> dict:
    """Item counts by status and the UNet frame-calls this run made (its done items: a skipped
    item's row keeps the calls that made its files, earlier)."""
    done = [r for r in rows if r["status"] == "done"]
    return {
        "items": len(rows),
        **{status: sum(r["status"] == status for r in rows) for status in STATUSES},
        "frame_calls": {
            stage: sum(r.get(f"frame_calls_{stage}") or 0 for r in done) for stage in ("inversion", "edit")
        },
    }


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        grid = "; ".join(f"{k}={json.dumps(v)}" for k, v in row["grid"].items())
        writer.writerow({**row, "grid": grid})
    return buffer.getvalue()


def _card(row: dict) -> str:
    e = html.escape
    caption = f"<b>{e(row['item'])}</b> · {e(row['method'])} · {e(row['status'])}"
    prompts = f"{e(row['source_prompt'])} → {e(row['target_prompt'])}"
    if row["status"] == "failed":
        body = f'<p class="error">{e(row["error"])}</p>'
    else:
        src = f"{ITEMS_DIR}/{row['item']}/side_by_side.mp4"
        body = f'<video src="{e(src)}" controls loop muted playsinline></video>'
        warp = row.get("warp_error_edited")
        if warp is not None:
            body += f"<p>warp error {warp:.4f} (source {row['warp_error_source']:.4f}), {row['seconds']:.1f} s</p>"
    return f"<figure>{body}<figcaption>{caption}<br>{prompts}</figcaption></figure>"


def _html_text(rows: list[dict], summary: dict, comparison: str = "") -> str:
    t = summary["totals"]
    head = (
        f"{t['items']} items: {t['done']} done, {t['skipped']} skipped, {t['failed']} failed; "
        f"UNet frame-calls {t['frame_calls']['inversion']} inversion + {t['frame_calls']['edit']} edit"
    )
    cards = "\n".join(_card(row) for row in rows)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vidinv batch</title>
<style>body{{font-family:sans-serif;margin:1em}} main{{display:flex;flex-wrap:wrap;gap:1em}}
figure{{margin:0;max-width:520px}} video{{width:100%}} .error{{color:#b00}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%}}
td{{text-align:right}} .charts{{display:flex;flex-wrap:wrap;gap:.5em}}</style></head>
<body><h1>vidinv batch</h1><p>{html.escape(head)}</p>
{comparison}<h2>Gallery</h2>
<main>
{cards}
</main></body></html>
"""


def write_report(out: Path, rows: list[dict], meta: dict) -> dict:
    """Write summary.csv, summary.json, the comparison of the methods (report.*, charts/) and
    index.html in `out` (each file atomically); return the summary."""
    summary = {**meta, "totals": totals(rows), "rows": rows}
    write_text(out / "summary.csv", _csv_text(rows))
    write_json(out / "summary.json", summary)
    report = write_comparison(out, rows)
    write_text(out / "index.html", _html_text(rows, summary, comparison_html(report)))
    return summary
