"""`vidinv tune CONFIG`: choose the inversion for a clip by reconstructing a short proxy of it.

The proxy is the configured clip's first `frames` frames (after video.start and stride) scaled to
`size` px wide (both sides multiples of 16, the aspect kept). The clip is encoded once; then every
inversion method the model runs (`vidinv.app.supported_methods`), over a small grid of its
settings, inverts it and regenerates it with the source prompt, as `vidinv reconstruct` does, and
is measured as `vidinv reconstruct` measures (`vidinv.jobs.reconstruct.measure`). The grid, read
from each method's traits so that a plug-in method gets one too:

    steps       the most steps whose planned frame-calls (inversion + reconstruction,
                `vidinv.planning.frame_calls`) fit the budget, and the most that fit half of it
    transforms  methods that read inversion.transforms (FreeInv, MBDI): the distinct groups of
                auto, flips and dihedral on the proxy's latents (one, auto, on non-square latents)
    freeinv     methods that compose FreeInv (rf_solver, fireflow): without and with it
    skip        step rules that start later (DDPM-EF's T_skip): 0 and the default 36% of the steps

Every candidate has the same budget of frame-calls (`--budget`, default: what the config's own
method costs at its steps on the proxy); the frame-calls each candidate makes are counted and
compared with it. FlowEdit's n_max is not tuned: FlowEdit inverts nothing, and its
reconstruction (target prompt = source prompt) gives the source latents back bit for bit at every
n_max, so a reconstruction cannot rank it.

Ranking (deterministic; seconds vary from run to run, so they are reported, never ranked on):
PSNR against the VAE round trip (`psnr_db`, the inversion's own error) rounded to 0.01 dB, highest
first; then the counted frame-calls, fewest first; then the candidate's name. Writes into
runtime.output_dir, each file under a temporary name renamed when complete:

    tuned.yaml  the input config with the winner's settings (its runtime.output_dir: OUTPUT/tuned)
    tune.json   the proxy, the budget, the rule and every candidate (settings, steps, frame-calls
                planned and counted, the three PSNRs of `vidinv reconstruct`, seconds)
    tune.csv    the same table
    tune.png    PSNR vs seconds per candidate, labelled
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidinv.config import Config, config_with, get_key, load_config, to_yaml
from vidinv.errors import VidinvError, first_line
from vidinv.outputs import atomic_path, write_json, write_text
from vidinv.registry import EDIT_METHODS
from vidinv.run_lock import releases_run_locks

log = logging.getLogger("vidinv")

OUTPUTS = ["tuned.yaml", "tune.json", "tune.csv", "tune.png"]
DEFAULT_FRAMES = 4  # proxy frames; on a video model (causal VAE) 1 + its 4 frames a latent frame
SIZE_UNIT = 16  # the proxy's sides are multiples of this (a flow transformer's token, 2x2 latents)
SHARES = (1.0, 0.5)  # the steps axis: the most steps within this share of the budget
TRANSFORMS = ("auto", "flips", "dihedral")  # the transforms axis, before removing equal groups
PSNR_DECIMALS = 2  # ranked on PSNR rounded to 0.01 dB
# PSNR of 8-bit rounding itself ([-1, 1] in steps of 2/255: MSE step^2 / 12): reconstructions above it
# differ by less than the video's own quantization, so they rank as equal (an exact method, DDPM-EF,
# measures 120+ dB in fp32, where the last digits are float rounding, not the method)
PSNR_CEILING = round(10 * math.log10(12 * 255**2), PSNR_DECIMALS)  # 58.92 dB
MAX_STEPS = 1000  # inversion.steps' range
RANKING = (
    f"psnr_db (reconstruction vs the VAE round trip) rounded to 0.01 dB, highest first, all values above "
    f"{PSNR_CEILING} dB (8-bit rounding's own PSNR) equal; then counted frame-calls, fewest first; then the name"
)
INVERSION_FREE = (
    "not tuned: {name} inverts nothing, and its reconstruction (target prompt = source prompt) gives the "
    "source latents back bit for bit at any of its settings, so reconstruction PSNR cannot rank them; they "
    "trade edit strength for fidelity, which only an edit shows (edit.{name} stays as configured)"
)


@dataclass
class Proxy:
    """The clip tune measures: `frames` frames at height x width, of the configured clip's."""

    frames: int
    height: int
    width: int
    of: dict  # the configured clip: frames (None = all), height, width

    def overrides(self) -> dict:
        return {"video.num_frames": self.frames, "video.height": self.height, "video.width": self.width}

    def describe(self) -> str:
        return f"{self.frames} frames at {self.width}x{self.height}"


@dataclass
class Candidate:
    """One method and settings at the steps that fit its share of the budget."""

    name: str
    method: str
    settings: dict  # dotted config keys -> values (inversion.method, inversion.steps, ...)
    share: float  # of the budget its steps were chosen for
    planned: dict  # frame-calls per stage, predicted
    counted: dict | None = None  # frame-calls per stage, counted during the run
    measured: dict = field(default_factory=dict)  # `vidinv.jobs.reconstruct.measure`'s PSNRs
    seconds: dict = field(default_factory=dict)  # inversion, reconstruction, total (their sum)
    error: str | None = None  # one line, when the candidate could not run
    rank: int | None = None

    @property
    def steps(self) -> int:
        return self.settings["inversion.steps"]

    def counted_total(self) -> int | None:
        return None if self.counted is None else sum(self.counted.values())

    def psnr(self) -> float | None:
        return self.measured.get("psnr_db")

    def rank_key(self) -> tuple:
        """PSNR rounded to 0.01 dB up to `PSNR_CEILING` (highest first), counted frame-calls
        (fewest first), name."""
        return (-min(round(self.psnr(), PSNR_DECIMALS), PSNR_CEILING), self.counted_total(), self.name)

    def row(self, budget: int) -> dict:
        total = self.counted_total()
        return {
            "rank": self.rank,
            "name": self.name,
            "method": self.method,
            "steps": self.steps,
            "settings": self.settings,
            "budget_share": self.share,
            "frame_calls": {
                "planned": sum(self.planned.values()),
                "counted": total,
                "planned_per_stage": self.planned,
                "counted_per_stage": self.counted,
                "within_budget": total is not None and total <= budget,
            },
            "psnr_db": self.psnr(),
            "psnr_latent_db": self.measured.get("psnr_latent_db"),
            "psnr_input_db": self.measured.get("psnr_input_db"),
            "psnr_db_per_frame": self.measured.get("psnr_db_per_frame"),
            "seconds": self.seconds,
            "error": self.error,
        }


def proxy_for(config: Config, frames: int | None, size: int | None) -> Proxy:
    """The proxy of the configured clip: `frames` first frames (default `DEFAULT_FRAMES`; 5 on a
    video model), `size` px wide (default half the clip's processed width), the height scaled by the
    same factor; both multiples of `SIZE_UNIT` unless the proxy keeps the clip's own size."""
    from vidinv.jobs.streaming import stream_for
    from vidinv.models.families import FAMILIES
    from vidinv.models.flow import flow_family_of

    if frames is not None and frames < 1:
        raise VidinvError(f"--frames: {frames}, expected an integer >= 1")
    if size is not None and size < SIZE_UNIT:
        raise VidinvError(f"--size: {size}, expected a width in px >= {SIZE_UNIT}")
    stream = stream_for(config)  # probes the clip (one line when it cannot be read)
    height, width = stream.height, stream.width
    if frames is None:
        family = FAMILIES.get(flow_family_of(config.model.pretrained, config.model.single_file_config))
        frames = DEFAULT_FRAMES + 1 if family is not None and family.video else DEFAULT_FRAMES
    wanted = config.video.num_frames
    frames = min(frames, wanted) if wanted is not None else frames
    size = width // 2 if size is None else size
    if size >= width:
        proxy_h, proxy_w = height, width
    else:
        proxy_w = max(SIZE_UNIT, size // SIZE_UNIT * SIZE_UNIT)
        proxy_h = max(SIZE_UNIT, int(height * proxy_w / width) // SIZE_UNIT * SIZE_UNIT)
    return Proxy(frames, proxy_h, proxy_w, {"frames": wanted, "height": height, "width": width})


def transform_choices(latent_hw: tuple[int, int]) -> list[str]:
    """The transforms axis: `TRANSFORMS` less those naming the same group as an earlier one on
    these latents (rot90's rotations are replaced by the shape-preserving group on non-square ones)."""
    from vidinv.transforms import GROUPS, SHAPE_PRESERVING, group_for

    h, w = latent_hw
    seen, names = [], []
    for name in TRANSFORMS:
        if name != "auto" and h != w and not set(GROUPS[name]) <= set(SHAPE_PRESERVING):
            continue  # replaced (with a note) by the shape-preserving group: auto's
        group = set(group_for(name, h, w))
        if group not in seen:
            seen.append(group)
            names.append(name)
    return names


def method_grid(config: Config, method: str, latent_hw: tuple[int, int]) -> list[dict]:
    """The settings of `method` to try (dotted keys; steps chosen later), from its traits."""
    from vidinv.inversion.samplers import Sampler
    from vidinv.registry import INVERSION_METHODS, SAMPLERS

    cls = INVERSION_METHODS.get(method)
    base = {"inversion.method": method, "inversion.freeinv": False}
    grid = [base]
    if getattr(cls, "composes_freeinv", False):
        grid = [base, {**base, "inversion.freeinv": True}]
    with_transforms = []
    for settings in grid:
        probe = copy.deepcopy(config.inversion)
        probe.freeinv = settings["inversion.freeinv"]
        if "transforms" in cls(probe).fingerprint_fields():
            with_transforms += [{**settings, "inversion.transforms": t} for t in transform_choices(latent_hw)]
        else:
            with_transforms.append(settings)
    sampler = SAMPLERS.get(cls.sampler)
    if getattr(sampler, "default_start", None) is not Sampler.default_start:  # starts later: T_skip
        return [{**s, "edit.skip": skip} for s in with_transforms for skip in (0, None)]
    return with_transforms


def candidate_name(settings: dict, steps: int) -> str:
    parts = [settings["inversion.method"]]
    if settings.get("inversion.freeinv"):
        parts.append("freeinv")
    if "inversion.transforms" in settings:
        parts.append(f"transforms={settings['inversion.transforms']}")
    if "edit.skip" in settings:
        parts.append(f"skip={settings['edit.skip']}")
    return " ".join([*parts, f"steps={steps}"])


def with_settings(config: Config, settings: dict) -> Config:
    """A copy of `config` with dotted `settings` set, unchecked (for the cost formulas)."""
    config = copy.deepcopy(config)
    for key, value in settings.items():
        section, name = key.rsplit(".", 1)
        setattr(get_key(config, section), name, value)
    return config


class Planner:
    """The planned frame-calls of a config on the proxy (`vidinv.planning`'s formulas, the model
    family's rows), and the most steps that fit a budget."""

    def __init__(self, config: Config, family, frames: int, latent_hw: tuple[int, int]):
        self.config, self.family, self.frames, self.latent_hw = config, family, frames, latent_hw

    def calls(self, config: Config) -> dict:
        from vidinv.planning.flow import flow_calls  # frame_calls with the family's guidance rows

        return flow_calls(config, "reconstruct", self.family, self.frames, self.latent_hw)

    def total(self, settings: dict, steps: int) -> int:
        return sum(self.calls(with_settings(self.config, {**settings, "inversion.steps": steps})).values())

    def steps_within(self, settings: dict, budget: int) -> int:
        """The most steps (0 when not even one) whose planned frame-calls are <= `budget` (the
        cost grows with steps: bisection)."""
        low, high = 0, MAX_STEPS  # total(low) fits (0 steps: nothing), find the last that does
        if self.total(settings, 1) > budget:
            return 0
        low = 1
        while low < high:
            mid = (low + high + 1) // 2
            if self.total(settings, mid) <= budget:
                low = mid
            else:
                high = mid - 1
        return low


def build_candidates(
    config: Config, methods: list[str], planner: Planner, budget: int
) -> tuple[list[Candidate], list[dict]]:
    """(candidates, unfit): every method's grid at each budget share's steps (a duplicate of the
    same steps dropped), and the settings whose one step costs more than the share."""
    from vidinv.inversion.costs import Costs

    found: dict[str, Candidate] = {}
    unfit = []
    for method in methods:
        for settings in method_grid(config, method, planner.latent_hw):
            for share in SHARES:
                steps = planner.steps_within(settings, int(budget * share))
                if steps < 1:
                    name = candidate_name(settings, 1).removesuffix(" steps=1")
                    unfit.append({"name": name, "budget_share": share, "one_step": planner.total(settings, 1)})
                    continue
                full = {**settings, "inversion.steps": steps}
                if "edit.skip" in settings and settings["edit.skip"] is None:
                    full["edit.skip"] = Costs(with_settings(config, full)).start  # T_skip, explicit
                elif "edit.skip" not in settings and config.edit.skip is not None and config.edit.skip >= steps:
                    full["edit.skip"] = None  # only the T_skip rules read it; keep the config valid
                name = candidate_name(full, steps)
                if name not in found:
                    planned = planner.calls(with_settings(config, full))
                    found[name] = Candidate(name, method, full, share, planned)
    return list(found.values()), unfit


def methods_to_tune(config: Config, runs: list[str], wanted: list[str] | None) -> list[str]:
    """The inversion methods the model `runs` (`vidinv.app.supported_methods`), or those of
    `--methods` (a one-line error for one it does not run)."""
    for name in wanted or []:
        if name not in runs:
            raise VidinvError(
                f"--methods: {name!r} does not run on {config.model.pretrained} (it runs: {', '.join(runs)})"
            )
    return runs if wanted is None else [name for name in runs if name in wanted]


def without_aliases(config: Config, names: list[str], scheduler) -> list[str]:
    """`names` less a plain method (no settings of its own) whose records take another listed
    method's own step rule on this model: DDIM on a flow model is the flow Euler step, the same
    computation as `flow`, tuned once."""
    from vidinv.inversion.flow import record_sampler
    from vidinv.registry import INVERSION_METHODS

    own_rules = {INVERSION_METHODS.get(name).sampler: name for name in names}
    kept = []
    for name in names:
        method = INVERSION_METHODS.get(name)(config.inversion)
        rule = record_sampler(method, scheduler)
        if rule != method.sampler and own_rules.get(rule) not in (None, name) and not method.fingerprint_fields():
            log.info("tune: %s runs as %s on this model; tuned once, as %s", name, own_rules[rule], own_rules[rule])
            continue
        kept.append(name)
    return kept


def rank(candidates: list[Candidate], budget: int) -> list[Candidate]:
    """The candidates in rank order (`RANKING`); those that failed or passed the budget last, unranked."""
    ok = [c for c in candidates if c.error is None and c.counted_total() is not None and c.counted_total() <= budget]
    ranked = sorted(ok, key=Candidate.rank_key)
    for place, candidate in enumerate(ranked, 1):
        candidate.rank = place
    return ranked + sorted((c for c in candidates if c not in ok), key=lambda c: c.name)


def measure_candidate(candidate: Candidate, config: Config, clip, *, progress: bool) -> None:
    """Invert and reconstruct the proxy with the candidate's settings; fills counted, measured, seconds."""
    from vidinv.inversion import ReconstructionStats, invert, reconstruct
    from vidinv.jobs.reconstruct import measure

    cfg = config_with(config, candidate.settings, origin=f"tune candidate {candidate.name!r}")
    models, stream, latents, control = clip
    record = invert(models, latents, cfg, progress=progress, control=control)
    stats = ReconstructionStats()
    recon = reconstruct(models, record, cfg, progress=progress, stats=stats, control=control)
    candidate.counted = {"inversion": record.stats.frame_calls, "reconstruction": stats.frame_calls}
    candidate.measured = measure(models, stream, recon, latents)
    seconds = {"inversion": record.stats.inversion_s, "reconstruction": stats.reconstruction_s}
    candidate.seconds = {**seconds, "total": round(sum(seconds.values()), 4)}


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["rank", "name", "method", "steps", "settings", "frame_calls_planned", "frame_calls_counted", "within_budget"]
        + ["psnr_db", "psnr_latent_db", "psnr_input_db", "seconds", "error"]
    )
    for r in rows:
        calls = r["frame_calls"]
        settings = " ".join(f"{k}={v}" for k, v in r["settings"].items())
        writer.writerow(
            [r["rank"], r["name"], r["method"], r["steps"], settings, calls["planned"], calls["counted"]]
            + [calls["within_budget"], r["psnr_db"], r["psnr_latent_db"], r["psnr_input_db"]]
            + [r["seconds"].get("total"), r["error"]]
        )
    return out.getvalue()


def write_chart(path: Path, ranked: list[Candidate], title: str) -> None:
    """PSNR (y) vs seconds (x) per ranked candidate, each point numbered by its rank and the ranking
    listed beside the plot; the winner starred. Candidates above `PSNR_CEILING` (equal in the
    ranking) are drawn on a band above the others, so that the others' differences stay visible."""
    from matplotlib.figure import Figure

    points = [c for c in ranked if c.rank is not None]
    below = [c.psnr() for c in points if c.psnr() < PSNR_CEILING]
    low, high = (min(below), max(below)) if below else (PSNR_CEILING - 1.0, PSNR_CEILING)
    pad = max(0.25, 0.1 * (high - low))
    band = high + 3 * pad  # where candidates above the ceiling are drawn
    figure = Figure(figsize=(12, 6), dpi=100)
    axes = figure.add_axes((0.1, 0.1, 0.48, 0.8))
    for c in points:
        above = c.psnr() >= PSNR_CEILING
        y = band if above else c.psnr()
        marker = "*" if c.rank == 1 else ("^" if above else "o")
        axes.scatter([c.seconds["total"]], [y], marker=marker, s=180 if c.rank == 1 else 45, zorder=3)
        axes.annotate(str(c.rank), (c.seconds["total"], y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if len(below) < len(points):
        line = high + 1.5 * pad
        axes.axhline(line, color="grey", linestyle="--", linewidth=0.8)
        label = f"above {PSNR_CEILING} dB (ranked as equal)"
        axes.text(0.01, line, label, transform=axes.get_yaxis_transform(), fontsize=7, va="bottom")
    axes.set_ylim(low - pad, band + pad if len(below) < len(points) else high + pad)
    if len(below) < len(points):  # the band's tick says what it holds, not a value on the scale
        ticks = [t for t in axes.get_yticks() if low - pad <= t <= high + pad]
        axes.set_yticks([*ticks, band], labels=[*(f"{t:g}" for t in ticks), f"> {PSNR_CEILING}"])
    axes.set_xlabel("seconds (inversion + reconstruction)")
    axes.set_ylabel("PSNR vs the VAE round trip (dB)")
    axes.set_title(title, fontsize=9, loc="left")
    axes.grid(True, alpha=0.3)
    lines = [
        f"{c.rank:>2}. {c.name}: {c.psnr():.2f} dB, {c.counted_total()} calls, {c.seconds['total']:.2f} s"
        for c in points
    ]
    figure.text(0.61, 0.9, "\n".join(lines), fontsize=7, family="monospace", va="top")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def table_text(ranked: list[Candidate], budget: int) -> str:
    lines = [f"{'rank':>4}  {'candidate':<44} {'calls':>7} {'PSNR dB':>8} {'seconds':>8}"]
    for c in ranked:
        place = str(c.rank) if c.rank is not None else "-"
        psnr = "error" if c.error else f"{c.psnr():.2f}"
        over = "" if c.counted_total() is None or c.counted_total() <= budget else " over budget"
        lines.append(
            f"{place:>4}  {c.name:<44} {c.counted_total() or 0:>7} {psnr:>8} {c.seconds.get('total', 0):>8.2f}{over}"
        )
    return "\n".join(lines)


@releases_run_locks
def run(
    config: Config,
    *,
    quiet: bool = False,
    frames: int | None = None,
    size: int | None = None,
    budget: int | None = None,
    methods: list[str] | None = None,
) -> str:
    """Tune the inversion on a proxy of the clip (module docstring); returns the summary (the
    ranking table first, unless `quiet`)."""
    from tqdm.auto import tqdm

    from vidinv.app import supported_methods
    from vidinv.editor import VideoEditor
    from vidinv.jobs.common import prepare_run_dir
    from vidinv.jobs.streaming import encode_stream, stream_for
    from vidinv.planning import check_fits

    started = time.perf_counter()
    if budget is not None and budget < 1:
        raise VidinvError(f"--budget: {budget}, expected a number of frame-calls >= 1")
    proxy = proxy_for(config, frames, size)
    base = config_with(config, proxy.overrides(), origin="tune proxy")
    runs, edit_methods = supported_methods(base)  # no weights loaded
    names = methods_to_tune(base, runs, methods)
    out = prepare_run_dir(config.runtime.output_dir, config.runtime.overwrite, OUTPUTS)
    check_fits(base, "reconstruct")  # before loading
    editor = VideoEditor(base, progress=not quiet)
    models = editor.models
    stream = stream_for(base)
    latents = encode_stream(models, stream, progress=not quiet)
    control = editor.control(stream.chunks()) if base.inversion.control else None
    planner = Planner(base, models.family, latents.shape[0], tuple(latents.shape[-2:]))
    own = sum(planner.calls(base).values())
    budget_from = (
        f"--budget {budget}" if budget is not None else f"{base.inversion.method} at {base.inversion.steps} steps"
    )
    budget = own if budget is None else budget
    names = names if methods is not None else without_aliases(base, names, models.scheduler)
    candidates, unfit = build_candidates(base, names, planner, budget)
    if not candidates:
        raise VidinvError(f"--budget: {budget} frame-calls is less than one step of any method on the proxy")
    bar = tqdm(candidates, desc="tune", unit="candidate", disable=quiet, leave=False)
    for candidate in bar:
        bar.set_postfix_str(candidate.name)
        try:
            measure_candidate(candidate, base, (models, stream, latents, control), progress=not quiet)
        except VidinvError as err:  # e.g. a method that cannot run these settings: the others go on
            candidate.error = first_line(err)
            log.warning("tune: %s failed: %s", candidate.name, candidate.error)
    ranked = rank(candidates, budget)
    winner = ranked[0] if ranked and ranked[0].rank == 1 else None
    if winner is None:
        raise VidinvError(f"tune: no candidate ran within the budget of {budget} frame-calls")

    tuned_dir = str(Path(config.runtime.output_dir) / "tuned")
    tuned = config_with(config, {**winner.settings, "runtime.output_dir": tuned_dir}, origin="tuned config")
    rows = [c.row(budget) for c in ranked]
    report = {
        "proxy": {
            "frames": proxy.frames,
            "height": proxy.height,
            "width": proxy.width,
            "latent_shape": list(latents.shape),
            "of": proxy.of,
            "overrides": [f"{k}={v}" for k, v in proxy.overrides().items()],
        },
        "budget": {"frame_calls": budget, "from": budget_from, "config_own": own, "shares": list(SHARES)},
        "ranking": RANKING,
        "metric": "psnr_db of `vidinv reconstruct`: the reconstruction decoded vs the input latents decoded",
        "not_tuned": {  # the inversion-free edit methods (FlowEdit): nothing to reconstruct
            f"edit.{name}": INVERSION_FREE.format(name=name)
            for name in edit_methods
            if EDIT_METHODS.get(name).inversion_free
        },
        "unfit": unfit,  # settings of which not one step fits (a share of) the budget
        "winner": winner.name,
        "tuned": winner.settings,
        "candidates": rows,
        "seconds": round(time.perf_counter() - started, 4),
    }
    title = f"vidinv tune: {proxy.describe()}, budget {budget} frame-calls; best {winner.name}"
    write_chart(out / "tune.png", ranked, title)
    write_text(out / "tune.csv", csv_text(rows))
    write_json(out / "tune.json", report)
    header = f"# vidinv tune: best of {len(rows)} candidates on {proxy.describe()} ({winner.name})\n"
    write_text(out / "tuned.yaml", header + to_yaml(tuned))
    psnr = winner.psnr()
    summary = (
        f"vidinv: tune of {len(rows)} candidates on {proxy.describe()}, budget {budget} frame-calls: best "
        f"{winner.name}, PSNR {psnr:.2f} dB, {winner.counted_total()} frame-calls, {winner.seconds['total']:.2f}s; "
        f"wrote {out}/ (tuned.yaml, tune.json, tune.csv, tune.png) in {time.perf_counter() - started:.1f}s"
    )
    return summary if quiet else table_text(ranked, budget) + "\n" + summary


def run_cli(args) -> int:
    """`vidinv tune CONFIG [key=value ...] [--frames N] [--size S] [--budget CALLS] [--methods a,b]`."""
    config = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.methods is not None and not methods:
        raise VidinvError("--methods: expected inversion method names separated by commas")
    print(run(config, quiet=args.quiet, frames=args.frames, size=args.size, budget=args.budget, methods=methods))
    return 0
