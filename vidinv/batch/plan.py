"""A manifest's items: one config per clip x prompt pair x method x grid point, grouped by clip (a
benchmark's: one per edit x method x grid point, its mask as `eval.mask`).

Items whose clip, model, video and inversion settings (the source prompt included) are the same
share one record folder (`runtime.record_dir`), so the clip is inverted once for all of them.
Within a clip, items whose edit needs more from the inversion than the record (FateZero's
attention store) run first, so the others reuse the record they leave.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidinv.batch.manifest import Manifest
from vidinv.config import Config, config_with, load_config
from vidinv.errors import VidinvError

ITEMS_DIR = "items"
RECORDS_DIR = "records"


@dataclass(frozen=True)
class BatchItem:
    """One edit of the batch: its name (its folder under OUTPUT/items/) and its complete config."""

    name: str
    clip: str
    source_prompt: str
    target_prompt: str
    grid: dict  # the item's method and grid values
    config: Config
    labels: dict = field(default_factory=dict)  # a benchmark edit's video, edit_type, prompt_file, mask

    @property
    def setup(self) -> str:
        """What the report compares: "inversion+edit", and the item's other grid values."""
        c = self.config
        rest = [f"{k}={v}" for k, v in self.grid.items() if k not in ("inversion.method", "edit.method")]
        return " ".join([f"{c.inversion.method}+{c.edit.method}", *rest])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "x"


def _method_points(methods: list[dict]) -> list[tuple[dict, str]]:
    """(values, name part) per entry of the manifest's `methods` (none: one empty point)."""
    if not methods:
        return [({}, "")]
    return [(m, "method-" + _slug("+".join(str(v) for v in m.values()))) for m in methods]


def _grid_points(grid: dict[str, list], methods: list[dict] | None = None) -> list[tuple[dict, str]]:
    """(values, name part) per method x grid point; scalar values name themselves, others their index."""
    return [
        ({**m_values, **g_values}, "_".join(filter(None, [m_name, g_name])))
        for m_values, m_name in _method_points(methods or [])
        for g_values, g_name in _product(grid)
    ]


def _product(grid: dict[str, list]) -> list[tuple[dict, str]]:
    keys = list(grid)
    points = []
    for combo in itertools.product(*(list(enumerate(grid[k])) for k in keys)):
        values = {k: v for k, (_, v) in zip(keys, combo)}
        parts = [
            f"{k.rsplit('.', 1)[-1]}-{_slug(str(v)) if isinstance(v, (str, int, float, bool)) else i}"
            for k, (i, v) in zip(keys, combo)
        ]
        points.append((values, "_".join(parts)))
    return points


def record_key(config: Config) -> str:
    """What decides the inversion record: model, clip selection, inversion settings, VAE chunking."""
    fields = {
        "model": asdict(config.model),
        "video": asdict(config.video),
        "inversion": asdict(config.inversion),
        "vae_chunk": config.runtime.vae_chunk,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def _absolute(path: str) -> str:
    """An existing relative path made absolute (workers on a cluster need not share the cwd)."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _needs_inversion_hooks(config: Config) -> bool:
    """True when the edit method captures something during the inversion (FateZero's store)."""
    from vidinv.editing import get_edit_method

    return get_edit_method(config.edit.method).captures_in_inversion


@dataclass(frozen=True)
class _Edit:
    """One prompt pair of a clip: its name part, prompts, mask (`eval.mask`) and labels."""

    part: str
    source: str
    target: str
    mask: str | None = None
    labels: dict = field(default_factory=dict)


def _clip_edits(manifest: Manifest) -> list[tuple[Path, list[_Edit]]]:
    """Each clip with its prompt pairs: every pair of the manifest, or the benchmark's edits of the clip."""
    if manifest.benchmark is None:
        pairs = [_Edit(f"p{p}", source, target) for p, (source, target) in enumerate(manifest.prompts)]
        return [(clip, pairs) for clip in manifest.clips]
    clips: dict[Path, list[_Edit]] = {}
    for edit in manifest.benchmark.edits:
        edits = clips.setdefault(edit.clip, [])
        base = f"e{_slug(edit.edit_type)}" if edit.edit_type is not None else f"p{len(edits)}"
        part = base if all(e.part != base for e in edits) else f"{base}-{len(edits)}"
        mask = str(edit.mask.resolve()) if edit.mask else None
        labels = {
            "video": edit.video,
            "edit_type": edit.edit_type,
            "prompt_file": edit.prompt_file,
            "entry": edit.index,
            "mask": mask,
        }
        edits.append(_Edit(part, edit.source_prompt, edit.target_prompt, mask, labels))
    return list(clips.items())


def plan_items(manifest: Manifest) -> list[list[BatchItem]]:
    """Every item of the manifest with its config checked, grouped by clip (manifest order)."""
    origin = f"manifest {manifest.path}"
    try:
        base = load_config(manifest.base, manifest.overrides)
    except VidinvError as err:
        raise VidinvError(f"{origin}: {err}") from err
    out = manifest.output_dir.resolve()
    groups = []
    for c, (clip, edits) in enumerate(_clip_edits(manifest)):
        clip_name = f"{c}-{_slug(clip.stem)}"
        group = []
        for edit in edits:
            source, target = edit.source, edit.target
            for values, grid_name in _grid_points(manifest.grid, manifest.methods):
                name = "_".join(filter(None, [clip_name, edit.part, grid_name]))
                settings = {
                    **values,
                    "video.path": str(clip.resolve()),
                    "inversion.source_prompt": source,
                    "edit.target_prompt": target,
                    **({"eval.mask": edit.mask} if edit.mask else {}),
                    "model.pretrained": _absolute(str(values.get("model.pretrained", base.model.pretrained))),
                    "runtime.output_dir": str(out / ITEMS_DIR / name),
                    "runtime.overwrite": True,  # an item's folder is the batch's: an incomplete one is redone
                }
                try:
                    config = config_with(base, settings, f"{origin} grid")
                except VidinvError as err:
                    raise VidinvError(f"{origin}: item {name}: {err}") from err
                record_dir = out / RECORDS_DIR / f"{clip_name}-{record_key(config)}"
                config.runtime.record_dir = str(record_dir)
                group.append(BatchItem(name, str(clip), source, target, values, config, dict(edit.labels)))
        group.sort(key=lambda item: not _needs_inversion_hooks(item.config))  # stable: manifest order otherwise
        groups.append(group)
    return groups
