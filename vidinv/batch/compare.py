"""A batch's comparison of its methods: report.csv (a row per item), report_methods.csv and
report.json (a row per method: mean ± std of every metric of metrics.json's clip comparison,
seconds and peak memory), and matplotlib charts in charts/ (each metric per method, bars with the
std; the per-frame warp error of each method), for index.html.

A method is an item's `setup`: "inversion+edit" and its other grid values. Its statistics are
over its finished items (done or skipped) whose value is a finite number (an infinite PSNR, written
null in metrics.json, is left out; `n` says how many counted); std is the population standard
deviation (ddof 0).
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path

from vidinv.batch.plan import ITEMS_DIR
from vidinv.outputs import atomic_path, write_json, write_text

CHARTS_DIR = "charts"
EXTRA_KEYS = ("seconds", "peak_memory_mb")  # after the clip comparison's metrics
PER_FRAME_CHART = "warp_error_per_frame"
# which way is better, for the table's headings (others: no arrow)
BETTER = {
    "warp_error": "↓",
    "flicker": "↓",
    "psnr": "↑",
    "ssim": "↑",
    "clip_t": "↑",
    "clip_f": "↑",
    "seconds": "↓",
    "peak_memory": "↓",
}
ROW_COLUMNS = ("item", "clip", "video", "edit_type", "method", "inversion", "edit", "status")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] in ("done", "skipped")]


def row_values(row: dict) -> dict:
    """An item's numbers: every metric of its clip comparison, its seconds and peak memory."""
    return {**row.get("metrics", {}), "seconds": row.get("seconds"), "peak_memory_mb": row.get("peak_memory_mb")}


def metric_keys(rows: list[dict]) -> list[str]:
    """The metrics the finished items have, in metrics.json's order, then seconds and peak memory."""
    keys: dict[str, None] = {}
    for row in _finished(rows):
        keys.update(dict.fromkeys(row.get("metrics", {})))
    return [*keys, *EXTRA_KEYS]


def stats(values: list) -> dict:
    """mean, population std and count of the finite values (mean and std None when there are none)."""
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(finite) / len(finite)
    return {"mean": mean, "std": math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / len(finite)), "n": len(finite)}


def compare(rows: list[dict]) -> dict:
    """The per-method table and the per-item rows (report.json without the chart paths)."""
    methods = list(dict.fromkeys(r["setup"] for r in rows))
    keys = metric_keys(rows)
    table = {}
    for method in methods:
        mine = [r for r in rows if r["setup"] == method]
        finished = _finished(mine)
        values = [row_values(r) for r in finished]
        table[method] = {
            "items": len(mine),
            "finished": len(finished),
            "failed": len(mine) - len(finished),
            "metrics": {key: stats([v.get(key) for v in values]) for key in keys},
        }
    return {"methods": methods, "metrics": keys, "table": table, "rows": [flat_row(r, keys) for r in rows]}


def flat_row(row: dict, keys: list[str]) -> dict:
    """An item's row of report.csv / report.json."""
    labels = row.get("benchmark", {})
    values = row_values(row)
    return {
        "item": row["item"],
        "clip": row["clip"],
        "video": labels.get("video"),
        "edit_type": labels.get("edit_type"),
        "method": row["setup"],
        "inversion": row["inversion"],
        "edit": row["method"],
        "status": row["status"],
        "mask": labels.get("mask"),
        **{key: values.get(key) for key in keys},
        "warp_error_per_frame": row.get("per_frame", {}).get("warp_error_edited"),
        "error": row.get("error", ""),
    }


def _csv(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def methods_rows(report: dict) -> list[dict]:
    """report_methods.csv's rows: a method each, `<metric>_mean`, `_std`, `_n` per metric."""
    rows = []
    for method in report["methods"]:
        entry = report["table"][method]
        row = {"method": method, **{k: entry[k] for k in ("items", "finished", "failed")}}
        for key, s in entry["metrics"].items():
            row.update({f"{key}_mean": s["mean"], f"{key}_std": s["std"], f"{key}_n": s["n"]})
        rows.append(row)
    return rows


def _figure(width: float = 5.0, height: float = 3.2):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=80, layout="constrained")


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def metric_chart(report: dict, key: str, path: Path) -> bool:
    """A bar per method: the mean of `key`, the std as its error bar; False (nothing written) when
    no method has a value."""
    methods = [m for m in report["methods"] if report["table"][m]["metrics"][key]["n"]]
    if not methods:
        return False
    entries = [report["table"][m]["metrics"][key] for m in methods]
    figure = _figure(max(4.0, 1.2 * len(methods) + 1.5))
    axes = figure.add_subplot()
    axes.bar(range(len(methods)), [e["mean"] for e in entries], yerr=[e["std"] for e in entries], capsize=4)
    axes.set_xticks(range(len(methods)), [f"{m}\n(n={e['n']})" for m, e in zip(methods, entries)], fontsize=8)
    axes.set_title(f"{key} {_arrow(key)}".strip() + " (mean ± std)", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    _save(figure, path)
    return True


def per_frame_chart(rows: list[dict], methods: list[str], path: Path) -> bool:
    """The warp error of each frame (against the one before, along the source's flow) per method:
    the mean over its finished items having that frame, the source's as a dashed baseline; False
    when no item has a pair of frames."""

    def mean_curve(curves: list[list]) -> list[float | None]:
        length = max((len(c) for c in curves), default=0)
        columns = [[c[i] for c in curves if i < len(c) and _finite(c[i])] for i in range(length)]
        return [math.fsum(col) / len(col) if col else None for col in columns]

    from matplotlib.ticker import MaxNLocator

    finished = _finished(rows)
    source = mean_curve([r.get("per_frame", {}).get("warp_error_source", []) for r in finished])
    if not source:
        return False
    figure = _figure(6.0, 3.6)
    axes = figure.add_subplot()
    frames = list(range(1, len(source) + 1))
    for method in methods:
        curve = mean_curve(
            [r.get("per_frame", {}).get("warp_error_edited", []) for r in finished if r["setup"] == method]
        )
        if curve:
            axes.plot(frames[: len(curve)], [math.nan if v is None else v for v in curve], marker="o", label=method)
    axes.plot(frames, [math.nan if v is None else v for v in source], "k--", marker=".", alpha=0.6, label="source")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("frame (warped from the one before)")
    axes.set_ylabel("warp error")
    axes.set_title("per-frame warp error (mean over items)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)
    return True


def write_comparison(out: Path, rows: list[dict]) -> dict:
    """report.csv, report_methods.csv, report.json and charts/*.png in `out`; returns report.json's content."""
    report = compare(rows)
    charts_dir = out / CHARTS_DIR
    charts = {"metrics": {}, PER_FRAME_CHART: None}
    for key in report["metrics"]:
        if metric_chart(report, key, charts_dir / f"{key}.png"):
            charts["metrics"][key] = f"{CHARTS_DIR}/{key}.png"
    if per_frame_chart(rows, report["methods"], charts_dir / f"{PER_FRAME_CHART}.png"):
        charts[PER_FRAME_CHART] = f"{CHARTS_DIR}/{PER_FRAME_CHART}.png"
    written = {Path(p).name for p in [*charts["metrics"].values(), charts[PER_FRAME_CHART]] if p}
    for stale in charts_dir.glob("*.png") if charts_dir.is_dir() else []:
        if stale.name not in written:  # an earlier run's chart of a metric no item has now
            stale.unlink()
    report = {
        **report,
        "charts": charts,
        "std": "population standard deviation (ddof 0) over the finished items' finite values; n counts them",
    }
    columns = [*ROW_COLUMNS, *report["metrics"], "mask", "error"]
    write_text(out / "report.csv", _csv(columns, report["rows"]))
    method_columns = ["method", "items", "finished", "failed"]
    method_columns += [f"{k}_{s}" for k in report["metrics"] for s in ("mean", "std", "n")]
    write_text(out / "report_methods.csv", _csv(method_columns, methods_rows(report)))
    write_json(out / "report.json", report)
    return report


def _arrow(key: str) -> str:
    return next((arrow for part, arrow in BETTER.items() if part in key and "source" not in key), "")


def _fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if _finite(value) else "–"


def comparison_html(report: dict) -> str:
    """index.html's part: the table per method, the charts, the per-item rows."""
    e = html.escape
    methods = report["methods"]
    head = "".join(
        f"<th>{e(m)}<br><small>{report['table'][m]['finished']} of {report['table'][m]['items']} items</small></th>"
        for m in methods
    )
    lines = []
    for key in report["metrics"]:
        cells = []
        for m in methods:
            s = report["table"][m]["metrics"][key]
            text = "–" if s["mean"] is None else f"{_fmt(s['mean'])} ± {_fmt(s['std'], 2)}"
            cells.append(f'<td title="n={s["n"]}">{e(text)}</td>')
        lines.append(f"<tr><th>{e(f'{key} {_arrow(key)}'.strip())}</th>{''.join(cells)}</tr>")
    table = f'<table class="methods"><tr><th>metric (mean ± std)</th>{head}</tr>\n' + "\n".join(lines) + "</table>"
    charts = [report["charts"][PER_FRAME_CHART], *report["charts"]["metrics"].values()]
    images = "\n".join(f'<img src="{e(src)}" alt="{e(Path(src).stem)}">' for src in charts if src)
    keys = report["metrics"]
    per_item = [
        "<tr><th>item</th><th>video / clip</th><th>edit type</th><th>method</th><th>status</th>"
        + "".join(f"<th>{e(k)}</th>" for k in keys)
        + "</tr>"
    ]
    for row in report["rows"]:
        clip = row["video"] or Path(row["clip"]).name
        cells = "".join(f"<td>{_fmt(row[k])}</td>" for k in keys)
        per_item.append(
            f'<tr><td><a href="{e(ITEMS_DIR)}/{e(row["item"])}/">{e(row["item"])}</a></td><td>{e(clip)}</td>'
            f"<td>{e(row['edit_type'] or '')}</td><td>{e(row['method'])}</td><td>{e(row['status'])}</td>{cells}</tr>"
        )
    return (
        "<h2>Methods</h2>\n"
        + table
        + "\n<p><small>std: population (ddof 0) over the items with a finite value; CSV/JSON: "
        + '<a href="report_methods.csv">report_methods.csv</a>, <a href="report.csv">report.csv</a>, '
        + '<a href="report.json">report.json</a></small></p>\n'
        + f'<h2>Charts</h2>\n<div class="charts">\n{images}\n</div>\n'
        + '<h2>Per item</h2>\n<table class="items">\n'
        + "\n".join(per_item)
        + "\n</table>\n"
    )
