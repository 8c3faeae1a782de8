"""A fake CUDA device for the CPU test suite: the model-side loops run as on a GPU, without one.

How it works:

- c10's stub device guard (`c10::impl::FakeGuardImpl<CUDA>`) is registered for CUDA by a one-line C++
  library (`build_cuda_guard`, built once into a cache folder), so a CPU build of PyTorch accepts
  `.to("cuda")` and `device="cuda"` (it otherwise stops at "not linked with support for cuda").
- Tensors on the fake device are `FakeTensor`s of `vidinv.planning.memory.fake_mode()` (the planner's
  mode): shapes, dtypes and devices propagate through every op, no data exists and nothing is
  computed. The mode raises where a GPU would on a CPU tensor (not a 0-d scalar) meeting a CUDA one,
  and on some dtype mismatches (the lane checks the others it lets through).
- `FakeCuda`, a dispatch mode over the fake mode (a `vidinv.planning.memory.LiveBytes`, so it also
  counts the device bytes alive for the `torch.cuda` memory stubs), routes every op: an op on CPU
  tensors alone runs for real (the host side of the code keeps its real values: step tables, seeded
  CPU noise, transform schedules), an op that touches the fake device goes to the fake mode, and a
  copy between the two is a transfer: host to device gives a fresh fake tensor, device to host a
  real zero-filled CPU tensor (so host code reading it, e.g. hashing a record, works on zeros).
- What it checks, each recorded as a violation (and raised at once):
    host syncs: a blocking device-to-host copy (`.cpu()`, `.tolist()`, `.numpy()`, a copy into a
      CPU tensor), reading a device value (`.item()`, `float()`, `bool()` / a Python branch on a
      device tensor), an op whose output size depends on device data (`nonzero`, boolean masks),
      and `torch.cuda.synchronize`; allowed only at the sites of `ALLOWED_SYNCS`, each with its
      reason (a site: the innermost vidinv function on the stack), and none of those inside a step
      but ALLOWED_IN_STEPS (`check`: between two consecutive step ends of a stage, which the API's
      callback_on_step_end marks with `on_step`). Non-blocking copies to the host are counted
      (`async_downloads`) but are no sync. Copies to the device are counted (`uploads`,
      `upload_sites`, `uploads_per_step`), not failed on: the loops make several a step by design
      (the step table's 0-d levels, the timestep diffusers moves to the device, index lists,
      FateZero's stored maps); whether a GPU waits on them is for a real device to measure.
    random draws: the docs promise seeded CPU generators (DDPM-EF's and FlowEdit's noise:
      `vidinv.inversion.methods.SeededNoise`, drawn with `torch.Generator("cpu")` and moved to the
      device; TokenFlow's keyframes and FreeInv's transforms: CPU generators too), so a draw with a
      generator on another device, or from a global RNG (no generator), is a violation.
    dtype mismatches: the fake mode's own checks (SDPA, bmm, a convolution's bias), and operands of
      different floating dtypes in a matmul, linear or convolution (`SAME_DTYPE_OPS`: CUDA refuses
      them, the meta kernels do not).
    errors of the fake mode (device or dtype mismatch), recorded even where the code catches them.
- `torch.cuda` is stubbed for the block (is_available, device_count, synchronize, the memory
  statistics, mem_get_info, device properties and name, is_bf16_supported, Event, current_stream),
  and two things torch and accelerate do only to fake parameters are done for the block as they
  are for real ones (`_moved_in_place_of_swapped`, `_rebuilt_as_parameters`).

    models = load_models("tiny", dtype="fp16", device="cpu")   # built for real, outside the lane
    with fake_cuda(monkeypatch) as lane:
        to_fake_cuda(models)                  # its weights: fake CUDA tensors of the same dtypes
        ...                                   # run the loops (callback_on_step_end=lane.on_step)
    lane.check()                              # no violation; lane.sync_counts(): the allowed ones
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    unset_fake_temporarily,
)

import vidinv
from vidinv.planning.memory import LiveBytes, fake_mode

aten = torch.ops.aten
# Ops whose CUDA kernels refuse floating operands of different dtypes, which the fake mode's meta
# kernels let through (a CUDA linear / convolution raises "... should be the same" on fp32 x fp16).
SAME_DTYPE_OPS = {
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.addmv.default,
    aten.mv.default,
    aten.dot.default,
    aten.linear.default,
    aten.matmul.default,
    aten.convolution.default,
}
VIDINV_DIR = str(Path(vidinv.__file__).resolve().parent)
GUARD_NAME = "vidinv_fake_cuda_guard"
GUARD_SOURCE = """
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>
C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);
"""
FAKE_TOTAL_MEMORY = 80 * 2**30  # what the device-property and mem_get_info stubs report

# Host syncs the lane allows, by site (file:function, the innermost vidinv function on the stack), each
# with its reason. None but ALLOWED_IN_STEPS may happen inside a step: `FakeCuda.check` fails on one
# between two consecutive step ends of a stage (the API's callback_on_step_end marks them: `on_step`).
ALLOWED_SYNCS = {
    "vidinv/models/vae.py:overflow_safe": "the half-precision VAE's overflow check (SDXL's fp16 VAE): one bool per"
    " VAE chunk, before the loops (encode) or after them (decode)",
    "vidinv/models/vae.py:FrameDecoder.push": "decoded frames go to the host (the API returns float32 CPU frames):"
    " one copy per VAE chunk, after the loops",
    "vidinv/models/causal_vae.py:CausalDecoder.push": "the same for Wan's causal VAE",
    "vidinv/models/clip_vae.py:ClipDecoder.push": "the same for the whole-clip video VAEs (LTX-Video, HunyuanVideo,"
    " CogVideoX): one copy of the clip's frames, after the loops",
    "vidinv/inversion/record.py:tensor_digest": "the record's fingerprint hashes the input latents: once per"
    " inversion, before its loop",
    "vidinv/inversion/api.py:on_host": "the record keeps its tensors on the CPU: once per inversion, after its loop",
    "vidinv/inversion/api.py:_sync": "one synchronize after the inversion / reconstruction loop, for its timing",
    "vidinv/editing/branches.py:sample_edit": "one synchronize after the edit loop, for its timing",
    "vidinv/editing/fatezero.py:FateZeroFusion.mask_fraction": "the blend mask's mean over the steps, for the"
    " stats: one read after the edit loop",
    "vidinv/errors.py:check_finite": "a stage's latents must be finite: one bool after each stage's loop (inversion,"
    " reconstruction, edit)",
    "vidinv/editing/flowedit.py:FlowEdit.source_record": "FlowEdit's source record holds the source latents on the"
    " CPU (as an inversion record): once, before its loop",
    "vidinv/editing/attention_store.py:AttentionStore.ready": "FateZero's store: one synchronize before the maps"
    " copied without blocking during the inversion are first read",
    "vidinv/models/offload.py:OneOnDevice.switch_to": "model offload sends the previous component back to the host"
    " when another one is called: text encoder / UNet / VAE switches, none inside a step",
    "vidinv/models/offload.py:enable_model_offload": "setting up model offload moves the weights to the host (once)",
    "vidinv/models/offload.py:enable_sequential_offload": "setting up sequential offload copies the weights to the"
    " host map (once)",
    "vidinv/inversion/step_file.py:StepFile.__setitem__": "runtime.record: disk writes every step of the record to"
    " its file as the step is computed (host memory bounded by one step): one copy of the step's latents (and"
    " noise map) per step, by design",
}
# The allowed syncs that may also happen inside a step (every other one happens before or after the loops).
ALLOWED_IN_STEPS = ("vidinv/inversion/step_file.py:StepFile.__setitem__",)


class LaneViolation(AssertionError):
    """What the fake CUDA lane fails on (see the module docstring)."""


def compiler() -> str | None:
    """The C++ compiler to build the guard with (CXX, else c++ / g++ / clang++), if there is one."""
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


def build_cuda_guard(build_dir: str | Path) -> str | None:
    """Build (once per build_dir, torch version and source) and load the library registering c10's stub
    guard for CUDA; returns why it cannot be built here (no C++ compiler), or None.

    The one-line source needs c10's headers alone, so it is compiled with the compiler directly, with
    the include / library paths and C++ ABI of torch's extension builder (a few seconds).
    `cpp_extension.load_inline` would do the same, but it also needs ninja and Python's headers (it
    prepends torch/extension.h: some 20 s), which a CI machine may lack."""
    from torch.utils import cpp_extension

    cxx = compiler()
    if cxx is None:
        return "no C++ compiler (CXX, c++, g++ or clang++) to build the CUDA device-guard stub"
    key = hashlib.sha256(f"{torch.__version__}|{GUARD_SOURCE}".encode()).hexdigest()[:12]
    library = Path(build_dir) / f"{GUARD_NAME}_{key}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        source = library.with_suffix(".cpp")
        source.write_text(GUARD_SOURCE, encoding="utf-8")
        partial = library.with_name(f"{library.stem}.{os.getpid()}.tmp")
        command = [
            cxx,
            "-shared",
            "-fPIC",
            "-std=c++17",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            *(f"-I{path}" for path in cpp_extension.include_paths()),
            str(source),
            "-o",
            str(partial),
            *(f"-L{path}" for path in cpp_extension.library_paths()),
            "-lc10",
            *(["-undefined", "dynamic_lookup"] if sys.platform == "darwin" else []),
        ]
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode:
            raise RuntimeError(
                f"building the CUDA device-guard stub failed: {' '.join(command)}\n{built.stderr[-3000:]}"
            )
        partial.replace(library)  # whole or absent, with concurrent builds too
    torch.ops.load_library(str(library))
    return None


@functools.cache
def _where(filename: str) -> tuple[str | None, bool]:
    """(vidinv/relative/path.py or None, whether the file is outside torch and this module)."""
    path = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    if path.startswith(VIDINV_DIR):
        return f"vidinv/{Path(path).relative_to(VIDINV_DIR).as_posix()}", True
    return None, "/torch/" not in path and path != __file__


def _site() -> str:
    """file:function of the innermost vidinv frame on the stack (else the innermost outside torch)."""
    frame = sys._getframe(2)
    other = None
    while frame is not None:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)
        vidinv_path, outside = _where(code.co_filename)
        if vidinv_path is not None:
            return f"{vidinv_path}:{name}"
        if other is None and outside:
            other = f"{Path(code.co_filename).name}:{name}:{frame.f_lineno}"
        frame = frame.f_back
    return other or "?"


def _leaves(args, kwargs) -> list:
    """The arguments of an op, one level of lists / tuples opened (torch.cat's tensors)."""
    leaves = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)):
            leaves.extend(value)
        else:
            leaves.append(value)
    return leaves


def _is_cuda(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "cuda"


def _cuda_device(value) -> bool:
    return isinstance(value, (torch.device, str)) and torch.device(value).type == "cuda"


class FakeCuda(LiveBytes):
    """The dispatch mode of the lane (module docstring); `live` / `peak` (LiveBytes): bytes of the fake
    tensors alive, which the torch.cuda memory stubs report."""

    def __init__(self, allowed: dict[str, str] | None = None):
        super().__init__()
        self.fake = fake_mode()
        self.allowed = ALLOWED_SYNCS if allowed is None else allowed
        self.syncs: Counter = Counter()  # allowed syncs: (site, what) -> count
        self.violations: list[str] = []
        self.uploads = 0  # host-to-device copies
        self.upload_sites: Counter = Counter()  # the same, by site
        self.async_downloads: Counter = Counter()  # non-blocking device-to-host copies, by site
        self.draws: Counter = Counter()  # random draws, by generator device
        self.log: list[tuple[str, str]] = []  # every allowed sync in order: (site, what)
        self.marks: list[tuple[str, int, int, int]] = []  # (stage, step, syncs, uploads so far) at each step's end
        self.loading = False  # set while a model loads: its weight initialisation may draw from the global RNG

    # ---- what the lane records -------------------------------------------------------------------
    def violation(self, message: str) -> LaneViolation:
        self.violations.append(message)
        return LaneViolation(f"fake CUDA lane: {message}")

    def sync(self, what: str) -> None:
        """A host sync at the current site: counted when allowed, else a violation."""
        site = _site()
        if site not in self.allowed:
            raise self.violation(f"host sync ({what}) at {site}")
        self.syncs[(site, what)] += 1
        self.log.append((site, what))

    def on_step(self, stage: str, step: int, total: int, latents=None) -> None:
        """The API's `callback_on_step_end`: marks the end of each step of each stage."""
        self.marks.append((stage, step, len(self.log), self.uploads))

    def _steps(self) -> list[tuple[tuple, tuple]]:
        """(end of step k, end of step k + 1) of each stage: what happened in between happened inside
        step k + 1 (the first step of a stage also holds what runs before its loop)."""
        pairs = zip(self.marks, self.marks[1:])
        return [(a, b) for a, b in pairs if a[0] == b[0] and b[1] == a[1] + 1]

    def steps_checked(self) -> int:
        """Steps whose syncs are known (see `_steps`)."""
        return len(self._steps())

    def uploads_per_step(self) -> dict[str, list[int]]:
        """Host-to-device copies inside each checked step, by stage (not failed on: see the module doc)."""
        counts: dict[str, list[int]] = {}
        for a, b in self._steps():
            counts.setdefault(a[0], []).append(b[3] - a[3])
        return counts

    def check(self) -> None:
        """Fail unless the block ran without a violation (also those the code under test caught), and
        no allowed sync happened inside a step (between two consecutive step ends of a stage)."""
        for (stage, _, before, _), (_, step, after, _) in self._steps():
            inside = [f"{site}: {what}" for site, what in self.log[before:after] if site not in ALLOWED_IN_STEPS]
            if inside:
                self.violations.append(f"host sync inside {stage} step {step}: {'; '.join(inside)}")
        if self.violations:
            raise LaneViolation("fake CUDA lane:\n  " + "\n  ".join(self.violations))

    def sync_counts(self) -> Counter:
        """Allowed syncs per site."""
        counts = Counter()
        for (site, _), n in self.syncs.items():
            counts[site] += n
        return counts

    # ---- routing -----------------------------------------------------------------------------------
    def _real(self, func, args, kwargs):
        with unset_fake_temporarily():
            return func(*args, **kwargs)

    def _on_fake(self, func, args, kwargs):
        try:
            return super().__torch_dispatch__(func, (), args, kwargs)  # the fake mode runs it; bytes counted
        except (DataDependentOutputException, DynamicOutputShapeException) as err:
            self.sync(f"{func}: output depends on device data ({type(err).__name__})")
            raise
        except LaneViolation:
            raise
        except Exception as err:
            self.violations.append(f"{func} at {_site()}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            raise

    def _fresh_fake(self, like: torch.Tensor) -> torch.Tensor:
        """A new fake CPU tensor of `like`'s size, strides and dtype (no memo: nothing refers to `like`)."""
        with self.fake:
            return torch.empty_strided(like.size(), like.stride(), dtype=like.dtype, device="cpu")

    def _zeros_like_fake(self, fake: torch.Tensor) -> torch.Tensor:
        with unset_fake_temporarily():
            return torch.empty_strided(fake.size(), fake.stride(), dtype=fake.dtype, device=fake.device).zero_()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = _leaves(args, kwargs)
        fakes = [t for t in leaves if isinstance(t, FakeTensor)]
        if torch.Tag.nondeterministic_seeded in func.tags:
            self._check_draw(func, kwargs.get("generator"))
        if func is aten._local_scalar_dense.default:
            if fakes:
                self.sync(f"{func}: reads a device value (.item(), float(), bool(), a branch on a tensor)")
                return _placeholder(args[0].dtype)
            return self._real(func, args, kwargs)
        if func is aten._to_copy.default:
            return self._to_copy(func, args, kwargs, fakes)
        if func is aten.copy_.default:
            return self._copy_(func, args, kwargs)
        if not fakes and not any(_cuda_device(v) for v in leaves):
            return self._real(func, args, kwargs)
        if func in SAME_DTYPE_OPS:
            dtypes = {t.dtype for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim()}
            if len(dtypes) > 1:
                raise self.violation(f"{func} at {_site()}: operands of different dtypes {sorted(map(str, dtypes))}")
        return self._on_fake(func, args, kwargs)

    def _check_draw(self, func, generator) -> None:
        if generator is None and self.loading:  # from_pretrained's initialisation, before the checkpoint's values
            self.draws["global (loading)"] += 1
            return
        if generator is None:
            raise self.violation(f"{func} at {_site()}: a draw from a global RNG (no seeded CPU generator)")
        if generator.device.type != "cpu":
            raise self.violation(f"{func} at {_site()}: a draw from a generator on {generator.device}, not the CPU")
        self.draws[generator.device.type] += 1

    def _to_copy(self, func, args, kwargs, fakes):
        x, target = args[0], kwargs.get("device")
        if not fakes:
            if _cuda_device(target):  # host to device: a fresh fake tensor
                self._upload()
                return self._on_fake(func, (self._fresh_fake(x), *args[1:]), kwargs)
            return self._real(func, args, kwargs)
        if target is not None and torch.device(target).type == "meta":  # accelerate's offloaded weights
            with unset_fake_temporarily():
                return torch.empty_strided(x.size(), x.stride(), dtype=kwargs.get("dtype") or x.dtype, device="meta")
        out = self._on_fake(func, args, kwargs)
        if out.device.type == "cpu":  # device to host: real zeros
            self._download(bool(kwargs.get("non_blocking", False)))
            return self._zeros_like_fake(out)
        return out

    def _copy_(self, func, args, kwargs):
        dst, src = args[0], args[1]
        non_blocking = bool(args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        if isinstance(src, FakeTensor) and not isinstance(dst, FakeTensor) and dst.device.type == "cpu":
            self._download(non_blocking)  # device to host: the host tensor keeps its (real) values
            return dst
        if isinstance(dst, FakeTensor) or isinstance(src, FakeTensor):
            if not isinstance(src, FakeTensor) and src.device.type == "cpu" and _is_cuda(dst):
                self._upload()
            return self._on_fake(func, args, kwargs)
        return self._real(func, args, kwargs)

    def _upload(self) -> None:
        self.uploads += 1
        self.upload_sites[_site()] += 1

    def _download(self, non_blocking: bool) -> None:
        if non_blocking:
            self.async_downloads[_site()] += 1
        else:
            self.sync("a blocking device-to-host copy (.cpu(), .tolist(), .numpy(), a copy into a CPU tensor)")


def _placeholder(dtype: torch.dtype):
    """The value an allowed read of a device scalar returns (the fake device holds no data): True for a
    bool (the allowed reads are checks that pass on a sound run: finite latents, no VAE overflow)."""
    if dtype == torch.bool:
        return True
    return 0.0 if dtype.is_floating_point else 0


class FakeEvent:
    """`torch.cuda.Event` on the fake device: records nothing, 0 ms elapsed."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing = enable_timing

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: FakeEvent) -> float:
        return 0.0


def _rebuilt_as_parameters(set_tensor):
    """accelerate's `set_module_tensor_to_device` (sequential offload) rebuilds a parameter as
    `type(param)(value)`: on a GPU the type is `Parameter`, here a fake parameter's is `FakeTensor`.
    The wrapper first swaps a fake parameter for a meta `Parameter` of its shape and dtype (all the
    call reads of the old one when it gets a new value or goes to the meta device)."""

    def wrapped(module, tensor_name, device, *args, **kwargs):
        owner, name = module, tensor_name
        if "." in tensor_name:
            path, name = tensor_name.rsplit(".", 1)
            owner = module.get_submodule(path)
        param = owner._parameters.get(name)
        value = kwargs.get("value", args[0] if args else None)
        if isinstance(param, FakeTensor) and (value is not None or torch.device(device).type == "meta"):
            with unset_fake_temporarily():
                meta = torch.empty_strided(param.size(), param.stride(), dtype=param.dtype, device="meta")
            owner._parameters[name] = torch.nn.Parameter(meta, requires_grad=param.requires_grad)
        return set_tensor(module, tensor_name, device, *args, **kwargs)

    return wrapped


def _as_parameter(tensor: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    """A module's parameter made of `tensor`: a `Parameter`, or a fake tensor marked as one (what
    `Parameter(fake)` makes, without the detach that may leave a weak reference to it)."""
    if not isinstance(tensor, FakeTensor):
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    tensor.requires_grad_(requires_grad)
    tensor._is_param = True
    return tensor


def _moved_in_place_of_swapped():
    """`nn.Module._apply` (behind `.to()`) for the lane. torch swaps the new tensor of a fake parameter
    (or of one becoming fake) into the parameter object (`torch.utils.swap_tensors`), which refuses a
    parameter referenced elsewhere: tied weights (T5's embeddings), or the very tensor when `.to()`
    changes nothing (accelerate's model offload moves a resident component again at every call). On a
    GPU the same move sets the parameter's data in place. Here a move that involves a fake tensor puts
    the moved tensor in place of the parameter in its modules (once per parameter object in one
    `.to()`: tied weights stay tied); a real-to-real move sets the data, as torch does by default."""
    moving: dict[int, torch.Tensor] | None = None  # parameter id -> its moved tensor, in the `.to()` in flight

    def _apply(self, fn, recurse=True):
        nonlocal moving
        top, moving = moving is None, moving if moving is not None else {}
        try:
            if recurse:
                for child in self.children():
                    child._apply(fn)
            for key, param in self._parameters.items():
                if param is None:
                    continue
                if id(param) not in moving:
                    with torch.no_grad():
                        new = fn(param)
                    if new is not param and not isinstance(param, FakeTensor) and not isinstance(new, FakeTensor):
                        param.data, new = new, param
                    moving[id(param)] = param if new is param else _as_parameter(new, param.requires_grad)
                self._parameters[key] = moving[id(param)]
            for key, buffer in self._buffers.items():
                if buffer is not None:
                    self._buffers[key] = fn(buffer)
            return self
        finally:
            if top:
                moving = None

    return _apply


def _stub_cuda(monkeypatch, lane: FakeCuda) -> None:
    """torch.cuda's device queries and statistics, answered for the fake device (scoped to the test)."""

    def synchronize(device=None) -> None:
        lane.sync("torch.cuda.synchronize")

    def reset_peak(device=None) -> None:
        lane.peak = lane.live

    properties = SimpleNamespace(
        name="vidinv fake CUDA", total_memory=FAKE_TOTAL_MEMORY, major=9, minor=0, multi_processor_count=1
    )
    stubs = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "synchronize": synchronize,
        "max_memory_allocated": lambda device=None: lane.peak,
        "reset_peak_memory_stats": reset_peak,
        "memory_allocated": lambda device=None: lane.live,
        "memory_reserved": lambda device=None: lane.live,
        "max_memory_reserved": lambda device=None: lane.peak,
        "mem_get_info": lambda device=None: (FAKE_TOTAL_MEMORY - lane.live, FAKE_TOTAL_MEMORY),
        "get_device_properties": lambda device=None: properties,
        "get_device_name": lambda device=None: properties.name,
        "is_bf16_supported": lambda *args, **kwargs: True,
        "Event": FakeEvent,
        "current_stream": lambda device=None: SimpleNamespace(device=torch.device("cuda")),
    }
    for name, stub in stubs.items():
        monkeypatch.setattr(torch.cuda, name, stub)
    import accelerate.hooks

    monkeypatch.setattr(
        accelerate.hooks,
        "set_module_tensor_to_device",
        _rebuilt_as_parameters(accelerate.hooks.set_module_tensor_to_device),
    )
    monkeypatch.setattr(torch.nn.Module, "_apply", _moved_in_place_of_swapped())


@contextmanager
def fake_cuda(monkeypatch, *, allowed: dict[str, str] | None = None) -> Iterator[FakeCuda]:
    """The fake CUDA device for the block (module docstring); the guard must be built first
    (`build_cuda_guard`). Yields the lane; `lane.check()` after the block fails on any violation."""
    lane = FakeCuda(allowed)
    _stub_cuda(monkeypatch, lane)
    lift_cpu_only = torch._C._only_lift_cpu_tensors()
    torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(..., device="cuda"): made on the CPU, then moved
    try:
        with torch.no_grad(), lane.fake, lane:
            yield lane
    finally:
        torch._C._set_only_lift_cpu_tensors(lift_cpu_only)


def module_to_fake_cuda(module: torch.nn.Module) -> torch.nn.Module:
    """`module`'s parameters and buffers, real CPU tensors, replaced by fake CUDA ones of the same dtype."""
    moved: dict[int, torch.Tensor] = {}  # once per parameter object: tied weights stay tied
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                if id(param) not in moved:
                    moved[id(param)] = _as_parameter(param.to("cuda"), requires_grad=False)
                sub._parameters[name] = moved[id(param)]
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.to("cuda")
    return module


def to_fake_cuda(models):
    """Every module of a loaded model (vidinv `Models` or `PipelineModels`, loaded on the CPU in the
    dtypes the loader chose) moved to the fake CUDA device; `models.device` is CUDA. Call it inside
    `fake_cuda` (the fake tensors belong to its mode)."""
    if hasattr(models, "pipeline"):
        modules = [m for m in models.pipeline.components.values() if isinstance(m, torch.nn.Module)]
    else:
        modules = [
            getattr(models, name) for name in models.components() if isinstance(getattr(models, name), torch.nn.Module)
        ]
        modules += list(getattr(models, "controlnets", []))
    for module in modules:
        module_to_fake_cuda(module)
    models.device = torch.device("cuda")
    return models


def unhooked_on_device(models) -> list[str]:
    """Components of an offloaded model that are neither hooked by accelerate (`_hf_hook` on them or
    a submodule) nor on the CPU: they hold device memory for the whole run."""
    if hasattr(models, "pipeline"):
        named = {n: m for n, m in models.pipeline.components.items() if isinstance(m, torch.nn.Module)}
    else:
        named = {n: getattr(models, n) for n in models.components() if isinstance(getattr(models, n), torch.nn.Module)}
        named |= {f"controlnets[{i}]": c for i, c in enumerate(getattr(models, "controlnets", []))}
    bad = []
    for name, module in named.items():
        hooked = any(hasattr(sub, "_hf_hook") for sub in module.modules())
        on_device = {p.device.type for p in module.parameters()} - {"cpu", "meta"}
        if not hooked and on_device:
            bad.append(name)
    return bad
