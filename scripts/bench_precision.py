"""Half precision on the CPU, for real: fp16 and bf16 edits against fp32, per tiny family and method.

    python scripts/bench_precision.py                                  # every tiny family and method (~1 min)
    python scripts/bench_precision.py --families tiny tiny-wan --dtypes bf16 --steps 3

Each row is one `VideoEditor.edit` of the bundled clip (samples/bikes.mp4, --frames frames, Wan 5: its causal
VAE takes 1 + 4k; --size px square, --steps inversion and edit steps) in a half dtype, beside the same edit in
fp32. The half model is the fp32 model cast: the tiny builders build their weights in fp32 under one seed and
`load_models` casts them to the asked dtype (tests/test_half_precision.py checks it), so the two runs differ
by their arithmetic alone. Methods: the tiny SD model runs every inversion x every edit method; tiny-sd2 and
tiny-sdxl every inversion method with pnp and every edit method with freeinv; tiny-sd3 and tiny-flux the
flow-model inversions (flow, ddim, freeinv, mbdi) with pnp and flowedit with freeinv; tiny-wan flowedit with
freeinv and with ddim (no transform).

Per row: whether the record (latents, DDPM-EF noise maps), the edited latents and the frames are all finite;
the dtype of the record's latents and noise maps, of the latents the edit loop carries from step to step
(its step callback) and of the velocities FlowEdit differences (v_tar - v_src, seen by wrapping FlowEdit's
`transformed`); and the relative error ||half - fp32|| / ||fp32|| of the record, of the edited latents and of
the frames. A method the family refuses is a row with its one-line reason. Prints a table and the places
where latents are not carried in fp32, writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import benchlib
import torch
from bench_edit import read_clip

from vidinv.config import config_from_dict
from vidinv.editor import VideoEditor, prepare_models
from vidinv.errors import VidinvError, first_line

DTYPES = ("fp16", "bf16")
SD_INVERSIONS = ("ddim", "freeinv", "ddpm_ef", "mbdi")
FLOW_INVERSIONS = ("flow", "ddim", "freeinv", "mbdi")
UNET_EDITS = ("pnp", "tokenflow", "fatezero")
FLOW_EDITS = ("pnp", "flowedit")


def covering(inversions, edits, inversion: str = "freeinv", edit: str = "pnp") -> list[tuple[str, str]]:
    """Every inversion method with `edit` and every edit method with `inversion`."""
    return list(dict.fromkeys([(i, edit) for i in inversions] + [(inversion, e) for e in edits]))


METHODS = {
    "tiny": [(i, e) for i in SD_INVERSIONS for e in UNET_EDITS],
    "tiny-sd2": covering(SD_INVERSIONS, UNET_EDITS),
    "tiny-sdxl": covering(SD_INVERSIONS, UNET_EDITS),
    "tiny-sd3": covering(FLOW_INVERSIONS, FLOW_EDITS),
    "tiny-flux": covering(FLOW_INVERSIONS, FLOW_EDITS),
    "tiny-wan": [("freeinv", "flowedit"), ("ddim", "flowedit")],
}
VIDEO_FRAMES = {"tiny-wan": 5}  # the shortest clip of more than one frame Wan's causal VAE takes
ERRORS = ("record", "latents", "frames")

COLUMNS = [
    ("family", "family", "s"),
    ("inversion", "inversion", "s"),
    ("edit", "edit", "s"),
    ("dtype", "dtype", "s"),
    ("finite", "finite", ""),
    ("record_dtype", "record", "s"),
    ("noise_maps_dtype", "noise maps", "s"),
    ("loop_dtype", "edit loop", "s"),
    ("velocity_dtype", "FlowEdit v", "s"),
    ("record_rel_error", "rel err record", ".2e"),
    ("latents_rel_error", "rel err latents", ".2e"),
    ("frames_rel_error", "rel err frames", ".2e"),
    ("seconds", "s", ".2f"),
    ("skipped", "note", "s"),
]


def relative_error(tensors, references) -> float:
    """||a - b|| / ||b|| over all the tensors (float64 sums; None entries left out)."""
    pairs = [(a.double(), b.double()) for a, b in zip(tensors, references) if a is not None and b is not None]
    diff = sum(float((a - b).square().sum()) for a, b in pairs)
    return (diff / max(sum(float(b.square().sum()) for _, b in pairs), 1e-300)) ** 0.5


def dtype_name(dtype) -> str | None:
    return None if dtype is None else str(dtype).replace("torch.", "")


@contextlib.contextmanager
def velocity_dtypes():
    """The set of dtypes of the velocities FlowEdit differences (v_tar - v_src) while the block runs, seen by
    wrapping the `transformed` its steps call (vidinv.editing.flowedit)."""
    from vidinv.editing import flowedit

    seen, original = set(), flowedit.transformed

    def probe(model, transform):
        call = original(model, transform)

        def velocities(z, t):
            v = call(z, t)
            seen.add(v.dtype)
            return v

        return velocities

    flowedit.transformed = probe
    try:
        yield seen
    finally:
        flowedit.transformed = original


def edit_once(models, config, clip: torch.Tensor) -> dict:
    """One `VideoEditor.edit` of `clip` with `models` (prepared as `config` says): the record's latents and
    noise maps, the edited latents and frames, and the dtypes the edit loop's latents (its step callback) and
    FlowEdit's velocities were carried in."""
    loop = set()

    def on_step(step):
        if step.latents is not None:
            loop.add(step.latents.dtype)

    start = time.perf_counter()
    with velocity_dtypes() as velocities:
        out = VideoEditor(config, models=prepare_models(models, config)).edit(clip, callback_on_step_end=on_step)
    return {
        "record": out.record.latents,
        "noise_maps": out.record.noise_maps,
        "latents": out.latents,
        "frames": out.frames,
        "loop_dtypes": loop,
        "velocity_dtypes": velocities,
        "seconds": time.perf_counter() - start,
    }


def only(dtypes: set) -> str | None:
    """The one dtype in `dtypes` (several: joined with '+'), None for none."""
    return "+".join(sorted(dtype_name(d) for d in dtypes)) or None


class PrecisionRuns:
    """The edits of one bench: models per (family, dtype) and results per (family, inversion, edit, dtype),
    each computed once (a half row and its fp32 reference share the fp32 run)."""

    def __init__(self, *, frames: int = 2, size: int = 32, steps: int = 2):
        self.frames, self.size, self.steps = frames, size, steps
        self._models, self._clips, self._runs = {}, {}, {}

    def models(self, family: str, dtype: str):
        from vidinv.models import load_models

        if (family, dtype) not in self._models:
            self._models[family, dtype] = load_models(family, device="cpu", dtype=dtype)
        return self._models[family, dtype]

    def config(self, family: str, inversion: str, edit: str, dtype: str):
        model = {"pretrained": family, "device": "cpu", "dtype": dtype}
        if family in VIDEO_FRAMES:
            model["frame_attention"] = "none"  # Wan attends across frames itself
        return config_from_dict(
            {
                "model": model,
                "video": {"num_frames": VIDEO_FRAMES.get(family, self.frames), "height": self.size, "width": self.size},
                "inversion": {"method": inversion, "steps": self.steps, "source_prompt": "a man riding a bike"},
                "edit": {"method": edit, "target_prompt": "a robot riding a bike"},
            }
        )

    def clip(self, config) -> torch.Tensor:
        key = (config.video.num_frames, self.size)
        if key not in self._clips:
            self._clips[key] = read_clip(config, config.video.num_frames, None)[0]
        return self._clips[key]

    def run(self, family: str, inversion: str, edit: str, dtype: str) -> dict:
        key = (family, inversion, edit, dtype)
        if key not in self._runs:
            config = self.config(family, inversion, edit, dtype)
            self._runs[key] = edit_once(self.models(family, dtype), config, self.clip(config))
        return self._runs[key]

    def row(self, family: str, inversion: str, edit: str, dtype: str) -> dict:
        """One half run against fp32: finiteness, dtypes, relative errors (module docstring); a method the
        family refuses gives a row with its one-line reason under `skipped`."""
        row = {"family": family, "inversion": inversion, "edit": edit, "dtype": dtype}
        try:
            half, full = self.run(family, inversion, edit, dtype), self.run(family, inversion, edit, "fp32")
        except VidinvError as err:
            return row | {"skipped": first_line(err)}
        tensors = {name: [half[name]] for name in ("latents", "frames")}
        tensors["record"] = [half["record"], half["noise_maps"]]
        references = {"latents": [full["latents"]], "frames": [full["frames"]]}
        references["record"] = [full["record"], full["noise_maps"]]
        row["finite"] = all(bool(torch.isfinite(t).all()) for ts in tensors.values() for t in ts if t is not None)
        row["record_dtype"] = dtype_name(half["record"].dtype)
        row["noise_maps_dtype"] = dtype_name(getattr(half["noise_maps"], "dtype", None))
        row["loop_dtype"] = only(half["loop_dtypes"])
        row["velocity_dtype"] = only(half["velocity_dtypes"])
        for name in ERRORS:
            row[f"{name}_rel_error"] = relative_error(tensors[name], references[name])
        row["seconds"] = half["seconds"]
        row["fp32_seconds"] = full["seconds"]
        return row


def not_fp32(rows: list[dict]) -> list[str]:
    """'family inversion/edit dtype: what' for every tensor a half run carried in another dtype than fp32."""
    keys = {"record_dtype": "record", "noise_maps_dtype": "noise maps", "loop_dtype": "edit loop latents"}
    keys["velocity_dtype"] = "FlowEdit velocities"
    return [
        f"{r['family']} {r['inversion']}/{r['edit']} {r['dtype']}: {what} in {r[key]}"
        for r in rows
        for key, what in keys.items()
        if r.get(key) not in (None, "float32")
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--frames", type=int, default=2, help="frames per clip (Wan: 5)")
    parser.add_argument("--size", type=int, default=32, help="frame side in pixels")
    parser.add_argument("--steps", type=int, default=2, help="inversion steps (the edit takes the same)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", default="bench_results/precision.json")
    args = parser.parse_args(argv)

    benchlib.set_threads(args.threads)
    runs = PrecisionRuns(frames=args.frames, size=args.size, steps=args.steps)
    rows = []
    for family in args.families:
        for inversion, edit in METHODS[family]:
            for dtype in args.dtypes:
                rows.append(runs.row(family, inversion, edit, dtype))
                print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    print(f"\n{' / '.join(args.dtypes)} against fp32 on the CPU ({args.size}x{args.size}, {args.steps} steps)")
    print(benchlib.format_table(rows, benchlib.present_columns(rows, COLUMNS)))
    for dtype in args.dtypes:
        mine = [r for r in rows if r["dtype"] == dtype and "skipped" not in r]
        if mine:
            worst = {name: max(r[f"{name}_rel_error"] for r in mine) for name in ERRORS}
            print(f"{dtype}: largest relative error " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    carried = not_fp32(rows)
    print("not carried in fp32: " + ("; ".join(carried) if carried else "none"))
    path = benchlib.write_results(args.json, "precision", vars(args), rows, "cpu", {"not_fp32": carried})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
