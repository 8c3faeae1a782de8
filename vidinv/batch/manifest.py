"""The batch manifest: a base config, overrides, clips, prompt pairs, a grid; read and checked.

    base: configs/demo.yaml                       # optional; null = the defaults
    overrides: [video.num_frames=16]              # key=value for every item
    clips: [samples/bikes.mp4, other.mp4]
    prompts:
      - {source: a man riding a bike, target: a robot riding a bike}
    grid: {edit.method: [pnp, tokenflow]}         # optional: every combination of these values
    output_dir: outputs/batch
    backend: local                                # local | ray
    workers: 1                                    # clips run at once
    threads: null                                 # torch CPU threads per clip (ray: CPUs per task); null = 1, on both backends

or, instead of clips and prompts, a benchmark folder in the FiVE-Bench layout (`vidinv.batch.benchmark`;
`vidinv batch FOLDER [key=value ...]` is the manifest `{benchmark: FOLDER}`):

    benchmark: data/FiVE                          # edit_prompt/*.json, images/ or videos/, bmasks/
    edit_types: [1, 3]                            # optional: only these editing_type_id values
    videos: [0001_bus]                            # optional: only these video names
    methods: [pnp, tokenflow, ddpm_ef+pnp]        # optional: edit methods, or inversion+edit pairs (any manifest)

Relative paths are relative to the working folder (as in the configs). Every mistake is a one-line
`VidinvError` naming the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidinv.batch.benchmark import Benchmark, is_benchmark, load_benchmark
from vidinv.errors import VidinvError, first_line

BACKENDS = ("local", "ray")
REQUIRED = ("clips", "prompts")
# config keys each item's clip, prompts and folders set: not for the grid or the overrides
ITEM_KEYS = ("video.path", "inversion.source_prompt", "edit.target_prompt", "runtime.output_dir", "runtime.record_dir")


@dataclass
class Manifest:
    path: Path
    clips: list[Path]
    prompts: list[tuple[str, str]]  # (source, target)
    base: Path | None = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list] = field(default_factory=dict)
    output_dir: Path = Path("outputs/batch")
    backend: str = "local"
    workers: int = 1
    threads: int | None = None
    benchmark: Benchmark | None = None  # its edits replace clips x prompts
    methods: list[dict] = field(default_factory=list)  # config values per method ({edit.method: ..}), x grid

    @property
    def threads_per_clip(self) -> int:
        """torch CPU threads per clip, the same on both backends and on every machine (CPU results
        depend on the count in their last bits): `threads`, else 1 (clips run in parallel as workers)."""
        return self.threads or 1


MANIFEST_KEYS = (
    "base",
    "overrides",
    "clips",
    "prompts",
    "grid",
    "output_dir",
    "backend",
    "workers",
    "threads",
    "benchmark",
    "edit_types",
    "videos",
    "methods",
)
BENCHMARK_ONLY = ("edit_types", "videos")


def split_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Command-line `key=value`s: top-level manifest keys (no dot: output_dir=..., backend=ray) and
    config overrides (dotted: inversion.steps=10)."""
    manifest, config = {}, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and "." not in key:
            if key not in MANIFEST_KEYS:
                raise VidinvError(f"override {item!r}: {key!r} is neither a manifest key nor a dotted config key")
            manifest[key] = yaml.safe_load(value) if value else None
        else:
            config.append(item)
    return manifest, config


def load_manifest(path: str | Path, overrides: list[str] | None = None) -> Manifest:
    """The manifest at `path` with command-line overrides (manifest keys and config overrides); a
    benchmark folder at `path` is the manifest `{benchmark: path}`."""
    path = Path(path)
    if path.is_dir():
        if not is_benchmark(path):
            raise VidinvError(
                f"{path} is a folder without edit_prompt/*.json: give a manifest, or a benchmark folder in the "
                "FiVE-Bench layout"
            )
        raw = {"benchmark": str(path)}
    elif not path.is_file():
        raise VidinvError(f"manifest {path} does not exist")
    else:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise VidinvError(f"manifest {path} is not valid YAML: {first_line(err)}") from err
    if not isinstance(raw, dict):
        raise VidinvError(f"manifest {path} must be a mapping with {', '.join(REQUIRED)}")
    from_cli, config_overrides = split_overrides(overrides or [])
    raw = {**raw, **from_cli}
    unknown = sorted(set(raw) - set(MANIFEST_KEYS))
    if unknown:
        raise VidinvError(f"manifest {path}: unknown key {unknown[0]!r} (keys: {', '.join(MANIFEST_KEYS)})")
    if raw.get("benchmark"):
        both = [key for key in REQUIRED if key in raw]
        if both:
            raise VidinvError(
                f"manifest {path}: {both[0]!r} and 'benchmark' exclude each other (its edits are the items)"
            )
    else:
        missing = [key for key in REQUIRED if not raw.get(key)]
        if missing:
            raise VidinvError(f"manifest {path}: {missing[0]!r} is missing or empty (or give a 'benchmark' folder)")
        stray = [key for key in BENCHMARK_ONLY if key in raw]
        if stray:
            raise VidinvError(f"manifest {path}: {stray[0]!r} selects a benchmark's edits: it needs 'benchmark'")

    def fail(message: str):
        raise VidinvError(f"{'benchmark' if path.is_dir() else 'manifest'} {path}: {message}")

    benchmark = None
    if raw.get("benchmark"):
        folder = Path(str(raw["benchmark"]))
        if not folder.is_dir():
            fail(f"benchmark {str(folder)!r} is not a folder")
        selected = {key: _filter(raw.get(key), key, fail) for key in BENCHMARK_ONLY}
        benchmark = load_benchmark(
            folder,
            **selected,
            fail=lambda message: fail(message if folder == path else f"benchmark {folder}: {message}"),
        )
    manifest = Manifest(
        path=path,
        clips=benchmark.clips() if benchmark else _clips(raw["clips"], fail),
        prompts=[] if benchmark else _prompts(raw["prompts"], fail),
        benchmark=benchmark,
        methods=_methods(raw.get("methods"), fail),
        base=_base(raw.get("base"), fail),
        overrides=[*_strings(raw.get("overrides") or [], "overrides", fail), *config_overrides],
        grid=_grid(raw.get("grid") or {}, fail),
        output_dir=Path(str(raw.get("output_dir") or Manifest.output_dir)),
        backend=raw.get("backend") or "local",
        workers=_count(raw.get("workers", 1), "workers", fail),
        threads=None if raw.get("threads") is None else _count(raw["threads"], "threads", fail),
    )
    if manifest.backend not in BACKENDS:
        fail(f"backend {manifest.backend!r}, expected one of {', '.join(BACKENDS)}")
    for key in sorted({k for m in manifest.methods for k in m} & set(manifest.grid)):
        fail(f"grid key {key!r} is also set by 'methods': give it in one of them")
    return manifest


def _filter(values, key: str, fail) -> list | None:
    """`edit_types` / `videos`: null (all), or one value or a list of them (numbers or strings)."""
    if values is None:
        return None
    values = values if isinstance(values, list) else [values]
    if not values or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values):
        fail(f"{key!r} must be a non-empty list of names or numbers")
    return values


def _methods(values, fail) -> list[dict]:
    """`methods`: edit methods (`pnp`) or `inversion+edit` pairs (`ddpm_ef+pnp`), as config values;
    checked against the registries when the items' configs are built."""
    if values is None:
        return []
    values = values if isinstance(values, list) else [values]
    if not values or not all(isinstance(v, str) and v.strip("+") and v.count("+") <= 1 for v in values):
        fail("'methods' must be a non-empty list of edit methods or inversion+edit pairs, e.g. [pnp, ddpm_ef+pnp]")
    if len(set(values)) != len(values):
        fail("'methods' lists a method twice")
    points = []
    for value in values:
        inversion, _, edit = value.rpartition("+")
        points.append({**({"inversion.method": inversion} if inversion else {}), "edit.method": edit})
    return points


def _count(value, key: str, fail) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(f"{key} {value!r}, expected an integer >= 1")
    return value


def _strings(values, key: str, fail) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        fail(f"{key!r} must be a list of strings")
    return values


def _clips(values, fail) -> list[Path]:
    clips = [Path(v) for v in _strings(values if isinstance(values, list) else [values], "clips", fail)]
    for clip in clips:
        if not clip.exists():
            fail(f"clip {str(clip)!r} does not exist")
    resolved = [clip.resolve() for clip in clips]
    twice = [str(c) for i, c in enumerate(clips) if resolved[i] in resolved[:i]]
    if twice:
        fail(f"clip {twice[0]!r} is listed twice")
    return clips


def _prompts(values, fail) -> list[tuple[str, str]]:
    if not isinstance(values, list):
        fail("'prompts' must be a list of {source: ..., target: ...}")
    pairs = []
    for i, pair in enumerate(values):
        if not isinstance(pair, dict) or set(pair) != {"source", "target"}:
            fail(f"prompts[{i}] must be a mapping with exactly 'source' and 'target', got {pair!r}")
        if not all(isinstance(pair[k], str) for k in ("source", "target")):
            fail(f"prompts[{i}]: source and target must be strings")
        pairs.append((pair["source"], pair["target"]))
    return pairs


def _base(value, fail) -> Path | None:
    if value is None:
        return None
    base = Path(str(value))
    if not base.is_file():
        fail(f"base config {str(base)!r} does not exist")
    return base


def _grid(values, fail) -> dict[str, list]:
    if not isinstance(values, dict):
        fail("'grid' must map config keys to lists of values, e.g. {edit.method: [pnp, tokenflow]}")
    for key, options in values.items():
        if key in ITEM_KEYS:
            fail(f"grid key {key!r} is set per item by the batch (clips, prompts, output_dir)")
        if not isinstance(options, list) or not options:
            fail(f"grid {key!r} must be a non-empty list of values")
    return dict(values)
