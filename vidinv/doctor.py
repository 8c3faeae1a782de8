"""`vidinv doctor`: a self-check of this machine for vidinv, in seconds (well under a minute).

One row per check (name, status, detail), status one of ok / warn / FAIL / skip:
torch, its CUDA build and the driver; each device and its free memory; fp16/bf16 on each device
(a tiny matmul against fp32); each attention backend against the `naive` reference on a
real-shaped tensor (SD 1.5's 64x64 latent self-attention in fp16 on CUDA, a smaller one on the
CPU); the video decoders on the bundled sample (or a clip doctor writes); the encoder's byte
stability (the same pictures written as mp4 and mkv after several different C heap states give
one md5 per format); the hub's reachability (one probe, HUB_PROBE_S at most) and the models in the
local hub cache; given a config, `vidinv plan`'s peak device / host memory against what is free
now. A check never lets an exception out: it becomes a FAIL row with one line.
`run_doctor` returns the rows and whether nothing failed (`vidinv doctor` exits 1 otherwise).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from vidinv.errors import VidinvError, first_line
from vidinv.planning.calls import MB

STATUSES = ("ok", "warn", "FAIL", "skip")
HUB_PROBE_S = 3.0  # one HEAD request to the hub, given up after this (no network: a warn, not a hang)
HEAP_STATES = 6  # with x264's AVX-512 MB-tree kernel back in, 6 states gave 5-6 md5s (AVX-512 machine)
STABILITY_SHAPE = (8, 144, 176)  # frames, height, width: 176 px = 11 macroblocks, not a multiple of 8 (128 px)
DECODE_FRAMES = 8
# (B, H, L, D) of the attention check: SD 1.5's 64x64-latent self-attention on CUDA; a smaller one elsewhere
ATTENTION_SHAPE = {"cuda": (2, 8, 4096, 40), "other": (1, 8, 1024, 40)}
# max |backend - naive| / max |naive| allowed, by the dtype the check runs in (SDPA on a CPU, 2x8x4096x40:
# fp32 1e-6, fp16 3.3e-4, bf16 5.3e-3; a kernel that normalises over the wrong axis: about 1)
ATTENTION_TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}
# max |matmul in dtype - fp32 matmul of the same (rounded) inputs| / max |fp32 result|
MATMUL_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 3e-2}
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "bikes.mp4"


@dataclass
class Row:
    name: str
    status: str  # one of STATUSES
    detail: str


def _mb(n: float) -> str:
    return f"{n / MB:,.0f} MB"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- memory
def host_available() -> int:
    """Bytes of host memory available now: /proc/meminfo's MemAvailable (else the free pages), less
    than that where a cgroup (a container's memory limit) leaves less."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            left = int(Path(limit).read_text()) - int(Path(usage).read_text())
        except (OSError, ValueError):  # absent, or "max" (no limit)
            continue
        available = min(available, max(left, 0))
    return available


def cuda_devices() -> list[torch.device]:
    return [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def run_device() -> torch.device:
    """The device a run with model.device=auto takes."""
    from vidinv.models import resolve_device

    return resolve_device("auto")


# ---------------------------------------------------------------- versions, devices, dtypes
def check_versions() -> Row:
    from vidinv.info import _version

    names = ("vidinv", "diffusers", "transformers", "av", "decord", "xformers")
    return Row(
        "versions", "ok", f"python {platform.python_version()}, " + ", ".join(f"{n} {_version(n)}" for n in names)
    )


def _nvidia_driver() -> str | None:
    """The NVIDIA driver's version string (e.g. 550.54.15) through NVML, where pynvml is installed."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 (no pynvml, no NVML library, no driver: not known)
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def check_torch() -> Row:
    """torch, the CUDA it was built for, the driver (the CUDA version it supports; its own version
    where NVML tells) and cuDNN; a warn with torch's reason when a CUDA build finds no usable device."""
    built = torch.version.cuda
    if built is None:
        return Row("torch", "ok", f"torch {torch.__version__}, a CPU build (no CUDA)")
    parts = [f"torch {torch.__version__}", f"built for CUDA {built}"]
    get_driver = getattr(torch._C, "_cuda_getDriverVersion", None)
    try:
        version = get_driver() if get_driver is not None else 0
    except RuntimeError:  # no driver at all
        version = 0
    nvidia = _nvidia_driver()
    driver = f"driver {nvidia}, " if nvidia else "driver "
    parts.append(
        f"{driver}supports CUDA {version // 1000}.{version % 1000 // 10}" if version else "no CUDA driver found"
    )
    with warnings.catch_warnings(record=True) as caught:  # torch says why CUDA cannot start in a warning
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        why = first_line(caught[0].message) if caught else "driver missing or too old?"
        return Row("torch", "warn", f"{', '.join(parts)}: no CUDA device is usable ({why})")
    if torch.backends.cudnn.is_available():
        parts.append(f"cuDNN {torch.backends.cudnn.version()}")
    return Row("torch", "ok", ", ".join(parts))


def check_cpu() -> Row:
    available = host_available()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    detail = (
        f"{os.cpu_count()} cores (torch uses {torch.get_num_threads()} threads), "
        f"{_mb(available)} of {_mb(total)} host memory available"
    )
    return Row("device cpu", "warn" if available < 2048 * MB else "ok", detail)


def check_cuda_device(device: torch.device) -> Row:
    free, total = torch.cuda.mem_get_info(device)
    props = torch.cuda.get_device_properties(device)
    detail = f"{props.name} (compute {props.major}.{props.minor}), {_mb(free)} of {_mb(total)} free" + (
        " (other processes hold the rest)" if free < total // 2 else ""
    )
    return Row(f"device {device}", "warn" if free < 1024 * MB else "ok", detail)


def matmul_error(dtype: torch.dtype, device: torch.device) -> float:
    """Relative error of a 64x64 matmul in `dtype` against fp32 on the same (rounded) inputs; inf
    when the result is not finite."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(64, 64, generator=generator).to(device=device, dtype=dtype) for _ in range(2))
    out = (a @ b).float()
    _sync(device)
    reference = a.float() @ b.float()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - reference).abs().max() / reference.abs().max())


def check_dtypes(device: torch.device) -> Row:
    """fp16 and bf16 on `device`: a matmul in each must be finite and close to fp32. FAIL when the
    dtype that model.dtype=auto takes there fails, warn for the others."""
    from vidinv.models import resolve_dtype

    auto = resolve_dtype("auto", device)
    parts, status = [], "ok"
    for dtype, tolerance in MATMUL_TOLERANCE.items():
        name = _dtype_name(dtype)
        if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            parts.append(f"{name} not supported (model.dtype=bf16 unavailable)")
            status = "warn" if status == "ok" else status
            continue
        try:
            error = matmul_error(dtype, device)
            problem = None if error <= tolerance else f"matmul error {error:.1e} > {tolerance:.0e}"
        except Exception as err:  # noqa: BLE001 (an unsupported dtype raises whatever the kernel raises)
            error, problem = None, first_line(err)
        if problem is None:
            parts.append(f"{name} ok (matmul error {error:.1e})")
            continue
        parts.append(f"{name}: {problem}")
        status = "FAIL" if dtype == auto else ("warn" if status == "ok" else status)
    return Row(f"dtypes {device}", status, f"auto = {_dtype_name(auto)}; " + ", ".join(parts))


# ---------------------------------------------------------------- attention
def attention_backends(device: torch.device) -> tuple[list[str], list[Row]]:
    """The backends to check on `device`: `vidinv info`'s less the reference, xformers whenever it is
    installed and the device is CUDA (a broken wheel too: its row says why it fails), and kernels
    that plug-ins registered; skip rows for those that cannot run here."""
    from vidinv.attention.backends import BACKENDS, KERNELS, xformers_available
    from vidinv.info import available_attention_backends

    names = [b for b in available_attention_backends() if b not in ("naive", "xformers")]
    skipped = []
    if not xformers_available():
        skipped.append(Row("attention xformers", "skip", "not installed (optional)"))
    elif device.type != "cuda":
        skipped.append(
            Row("attention xformers", "skip", f"installed; vidinv uses it on CUDA only, runs are on {device}")
        )
    else:
        names.insert(0, "xformers")
    names += [name for name in KERNELS if name not in BACKENDS]
    return names, skipped


def check_attention(backend: str, device: torch.device) -> Row:
    """`backend` against `naive` (float32 scores) on random q, k, v of a real shape in the dtype a
    run takes on `device`; a kernel that raises (an xformers wheel built for another torch) is a
    FAIL with its first line."""
    from vidinv.attention.backends import KERNELS, naive
    from vidinv.models import resolve_dtype

    dtype = resolve_dtype("auto", device)
    shape = ATTENTION_SHAPE["cuda" if device.type == "cuda" else "other"]
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
    scale = shape[-1] ** -0.5
    name = f"attention {backend}"
    try:
        reference = naive(q, k, v, scale=scale).float()
        _sync(device)
    except Exception as err:  # noqa: BLE001 (out of memory for the reference: nothing to compare with)
        return Row(name, "warn", f"the naive reference failed, nothing compared: {first_line(err)}")
    start = time.perf_counter()
    try:
        out = KERNELS[backend](q, k, v, scale=scale)
        _sync(device)
    except Exception as err:  # noqa: BLE001 (a broken kernel raises anything; one line, no traceback)
        fallback = "; model.attention=auto runs on sdpa instead" if backend == "xformers" else ""
        return Row(name, "FAIL", f"raises on {device}: {type(err).__name__}: {first_line(err)[:200]}{fallback}")
    ms = (time.perf_counter() - start) * 1000
    where = f"{'x'.join(map(str, shape))} {_dtype_name(dtype)} on {device}"
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        return Row(name, "FAIL", f"returns {tuple(out.shape)} {out.dtype} for q of {where}")
    tolerance = ATTENTION_TOLERANCE[dtype]
    error = float((out.float() - reference).abs().max() / reference.abs().max())
    if not error <= tolerance:  # NaN included
        return Row(name, "FAIL", f"differs from naive: error {error:.1e} > {tolerance:.0e} ({where})")
    return Row(name, "ok", f"matches naive: error {error:.1e} <= {tolerance:.0e} ({where}, {ms:.0f} ms)")


# ---------------------------------------------------------------- video
def smooth_pictures(frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (frames, height, width, 3): smooth waves and a soft blob, moving a few px a frame."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pictures = []
    for t in range(frames):
        red = 127.5 + 127.5 * np.sin((x + 3 * t) / 17.0) * np.cos((y - 2 * t) / 23.0)
        green = 127.5 + 127.5 * np.sin((x + y + 5 * t) / 29.0)
        blue = 255 * np.exp(-((x - 40 - 6 * t) ** 2 + (y - 60 - 3 * t) ** 2) / 800.0)
        pictures.append(np.stack([red, green, blue], axis=-1))
    return np.clip(np.stack(pictures), 0, 255).round().astype(np.uint8)


def sample_clip(folder: Path) -> Path:
    """The bundled samples/bikes.mp4 (a checkout), else a clip of smooth pictures written (once) in `folder`."""
    if SAMPLE.is_file():
        return SAMPLE
    from vidinv.io.writing import write_video

    written = folder / "doctor.mp4"
    return written if written.is_file() else write_video(written, smooth_pictures(DECODE_FRAMES, 64, 96), 8)


def check_decoder(name: str, folder: Path) -> Row:
    """Decode DECODE_FRAMES frames of the sample (`sample_clip`) with decord or PyAV: the count and
    size the container states. PyAV failing is a FAIL (it is the fallback); decord failing a warn
    (video.decoder=auto falls back to PyAV)."""
    from vidinv.io.decoders import DecodeFailed, decode_decord, decode_pyav, probe
    from vidinv.io.selection import FrameSelection

    row = f"decoder {name}"
    if name == "decord":
        if importlib.util.find_spec("decord") is None:
            return Row(row, "skip", "not installed (optional: PyAV decodes)")
        try:
            import decord  # noqa: F401
        except (ImportError, OSError) as err:
            return Row(row, "warn", f"installed, but does not load ({first_line(err)}); video.decoder=auto uses PyAV")
    clip = sample_clip(folder)
    stated = probe(clip)
    start = time.perf_counter()
    try:
        decoded = (decode_decord if name == "decord" else decode_pyav)(clip, FrameSelection(0, DECODE_FRAMES, 1))
    except DecodeFailed as err:
        fallback = "; video.decoder=auto uses PyAV" if name == "decord" else ""
        return Row(row, "warn" if name == "decord" else "FAIL", f"cannot decode {clip.name}: {err}{fallback}")
    ms = (time.perf_counter() - start) * 1000
    got = decoded.pictures.shape
    expected = (DECODE_FRAMES, stated.height, stated.width, 3)
    if got != expected:
        return Row(row, "FAIL", f"decoded {got} from {clip.name}, expected {expected}")
    return Row(row, "ok", f"{DECODE_FRAMES} frames of {clip.name} at {stated.height}x{stated.width} in {ms:.0f} ms")


def check_encoder_stability(folder: Path) -> Row:
    """The same smooth pictures written as mp4 (x264) and mkv (FFV1) after HEAP_STATES different
    C heap states (`vidinv.hostmemory.scramble_heap`): one md5 per format, else FAIL."""
    from vidinv.hostmemory import scramble_heap
    from vidinv.io.writing import write_video
    from vidinv.io.x264 import x264_cpu_flags

    frames, height, width = STABILITY_SHAPE
    pictures = smooth_pictures(frames, height, width)
    parts, failed, scrambled = [], [], True
    for fmt in ("mp4", "mkv"):
        digests = []
        for seed in range(HEAP_STATES):
            scrambled = scramble_heap(1000 + seed) and scrambled
            path = write_video(folder / f"stability.{fmt}", pictures, 8)
            digests.append(hashlib.md5(path.read_bytes()).hexdigest()[:8])
            path.unlink()
        distinct = sorted(set(digests), key=digests.index)
        parts.append(f"{fmt} {len(distinct)} md5 ({', '.join(distinct)})")
        if len(distinct) > 1:
            failed.append(fmt)
    where = f"{frames} frames {height}x{width}, {HEAP_STATES} heap states"
    pinned = "" if x264_cpu_flags() is not None else "; x264's instruction sets could not be pinned"
    if failed:
        return Row(
            "encoder bytes",
            "FAIL",
            f"{', '.join(failed)}: the bytes follow the heap's garbage ({'; '.join(parts)}; {where}){pinned}",
        )
    if not scrambled:
        return Row("encoder bytes", "warn", f"no C heap to scramble here (not glibc): {'; '.join(parts)}{pinned}")
    return Row("encoder bytes", "ok", f"{'; '.join(parts)} over {where}{pinned}")


# ---------------------------------------------------------------- hub
def check_hub() -> Row:
    """One HEAD request to the hub, given up after HUB_PROBE_S (in a thread: a DNS lookup that
    hangs is given up too)."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return Row("hub", "skip", "HF_HUB_OFFLINE=1: hub ids load from the hub cache only")
    endpoint, answer = constants.ENDPOINT, {}

    def probe() -> None:
        try:
            answer["status"] = get_session().head(f"{endpoint}/api/models", timeout=HUB_PROBE_S).status_code
        except Exception as err:  # noqa: BLE001 (every network failure means the same here)
            answer["error"] = type(err).__name__

    start = time.perf_counter()
    thread = threading.Thread(target=probe, name="vidinv-doctor-hub", daemon=True)
    thread.start()
    thread.join(HUB_PROBE_S + 0.5)
    seconds = time.perf_counter() - start
    cached = "hub ids load only from the hub cache (HF_HUB_OFFLINE=1 skips the probe)"
    if "status" not in answer:
        why = answer.get("error") or f"no answer within {HUB_PROBE_S:.0f} s"
        return Row("hub", "warn", f"{endpoint} cannot be reached ({why}, {seconds:.1f} s): {cached}")
    if answer["status"] >= 500:
        return Row("hub", "warn", f"{endpoint} answers HTTP {answer['status']} ({seconds:.1f} s): {cached}")
    return Row("hub", "ok", f"{endpoint} answers (HTTP {answer['status']}) in {seconds:.1f} s")


def check_hub_cache(hub_reachable: bool = True, shown: int = 8) -> Row:
    """The models in the local hub cache (hub id and size); a warn when it has none and the hub
    cannot be reached (then only local folders and files load)."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = [r for r in scan_cache_dir().repos if r.repo_type == "model"]
    except CacheNotFound:
        repos = []
    if not repos:
        detail = f"{constants.HF_HUB_CACHE}: no models" + (
            "" if hub_reachable else " (and no hub: only local folders, single files and the tiny models load)"
        )
        return Row("hub cache", "ok" if hub_reachable else "warn", detail)
    repos.sort(key=lambda r: r.repo_id)
    listed = ", ".join(f"{r.repo_id} ({_mb(r.size_on_disk)})" for r in repos[:shown])
    more = f", and {len(repos) - shown} more" if len(repos) > shown else ""
    return Row("hub cache", "ok", f"{constants.HF_HUB_CACHE}: {len(repos)} models: {listed}{more}")


# ---------------------------------------------------------------- a config's plan
def check_plan(config, command: str = "edit") -> Row:
    """`vidinv plan`'s prediction for `vidinv COMMAND CONFIG` against the memory free now: the
    peak device memory against the run's CUDA device's free memory, the peak host memory against
    the host memory available; FAIL with both figures when either does not fit."""
    from vidinv.planning import plan_run

    plan = plan_run(config, command)
    device = torch.device(plan.device)
    name = f"plan {command}"
    parts, failures = [], []
    if device.type == "cuda":
        index = device.index if device.index is not None else 0
        if index >= len(cuda_devices()):
            return Row(
                name,
                "FAIL",
                f"the config runs on {device}, which this machine does not have (predicted peak device memory"
                f" {_mb(plan.device_peak)}, host memory {_mb(plan.host_peak)})",
            )
        free, _ = torch.cuda.mem_get_info(index)
        fits = plan.device_peak <= free
        parts.append(
            f"peak device memory {_mb(plan.device_peak)} {'<=' if fits else '>'} {_mb(free)} free on cuda:{index}"
        )
        if not fits:
            failures.append("device")
    available = host_available()
    fits = plan.host_peak <= available
    parts.append(f"peak host memory {_mb(plan.host_peak)} {'<=' if fits else '>'} {_mb(available)} available")
    if not fits:
        failures.append("host")
    what = f"{plan.frames} frames at {plan.height}x{plan.width} on {device}"
    if failures:
        return Row(name, "FAIL", f"does not fit: {'; '.join(parts)} ({what})")
    return Row(name, "ok", f"fits: {'; '.join(parts)} ({what})")


# ---------------------------------------------------------------- all of it
def _guarded(name: str, check: Callable[[], Row | list[Row]]) -> list[Row]:
    """The check's rows, or one FAIL row with one line when it raises."""
    try:
        rows = check()
    except VidinvError as err:
        return [Row(name, "FAIL", str(err))]
    except Exception as err:  # noqa: BLE001 (a doctor reports what breaks, it does not break)
        return [Row(name, "FAIL", f"{type(err).__name__}: {first_line(err)}")]
    return rows if isinstance(rows, list) else [rows]


def run_doctor(
    config=None, command: str = "edit", on_row: Callable[[Row], None] | None = None
) -> tuple[list[Row], bool]:
    """Every check in order (with `config`: its plan last); `on_row` sees each row as it comes.
    Returns the rows and whether none is a FAIL."""
    rows: list[Row] = []

    def add(name: str, check: Callable[[], Row | list[Row]]) -> list[Row]:
        new = _guarded(name, check)
        for row in new:
            rows.append(row)
            if on_row is not None:
                on_row(row)
        return new

    add("versions", check_versions)
    add("torch", check_torch)
    add("device cpu", check_cpu)
    for device in cuda_devices():
        add(f"device {device}", partial(check_cuda_device, device))
    device = run_device()
    for each in dict.fromkeys([device, torch.device("cpu")]):
        add(f"dtypes {each}", partial(check_dtypes, each))
    backends, skipped = attention_backends(device)
    add("attention", lambda: skipped)
    for backend in backends:
        add(f"attention {backend}", partial(check_attention, backend, device))
    with tempfile.TemporaryDirectory(prefix="vidinv-doctor-") as scratch:
        folder = Path(scratch)
        for decoder in ("decord", "pyav"):
            add(f"decoder {decoder}", partial(check_decoder, decoder, folder))
        add("encoder bytes", partial(check_encoder_stability, folder))
    hub = add("hub", check_hub)
    add("hub cache", partial(check_hub_cache, hub_reachable=hub[0].status == "ok"))
    if config is not None:
        add(f"plan {command}", partial(check_plan, config, command))
    return rows, all(row.status != "FAIL" for row in rows)


def format_row(row: Row, width: int = 20) -> str:
    return f"{row.name:<{width}}  {row.status:<6}  {row.detail}"


HEADER = format_row(Row("check", "status", "detail"))


def summary(rows: list[Row], seconds: float) -> str:
    counts = ", ".join(f"{sum(row.status == s for row in rows)} {s}" for s in STATUSES)
    return f"doctor: {counts} ({seconds:.1f} s)"
