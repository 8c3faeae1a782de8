"""The x264 instruction sets that make an mp4's bytes a function of its pictures alone.

x264's AVX-512 MB-tree propagation (`mbtree_propagate_list_internal_avx512`, x264 build 164-165)
works on 8 macroblocks at a time and does not stop at the end of a row: when the picture is not a
multiple of 8 macroblocks (128 px) wide, the last row's extra lanes read lowres costs and motion
vectors past the end of their arrays, memory x264 never wrote, and scatter what they find into the
reference frames' propagate costs. The quantizers, and so the bytes, then depend on what the heap
held before (a 144x160 clip written after six different heap states: 5 different md5s). valgrind
cannot see it: it emulates no AVX-512, so x264 takes its AVX2 path there. The AVX2 and older
paths stop at the row's end (x264's C loop over `len`), and with AVX-512 taken out the same probe
gives one md5 at every size, with the heap and the stack filled with different garbage first.

`x264_params()` is x264's own CPU detection (`x264_cpu_detect` of the libx264 that PyAV loaded)
less AVX-512, handed to the encoder as `asm=FLAGS`. It costs no quality (the same decisions, only
one kernel takes the AVX2 route) and makes an AVX-512 machine write what an AVX2 machine writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from pathlib import Path

log = logging.getLogger("vidinv")
X264_CPU_AVX512 = 1 << 16  # x264.h: X264_CPU_AVX512 (x86); no ARM/PPC flag uses this bit


def libx264_path() -> str | None:
    """The libx264 that PyAV's libavcodec loaded: the one mapped into this process (Linux), else
    the copy bundled beside PyAV (wheels), else the system's."""
    import av  # noqa: F401  (loads libavcodec, and with it libx264)

    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            if "/libx264" in line:
                return line.split(maxsplit=5)[-1]
    package = Path(av.__file__).parent
    for bundled in sorted([*package.parent.glob("av.libs/libx264*"), *package.glob(".dylibs/libx264*")]):
        return str(bundled)
    return ctypes.util.find_library("x264")


@functools.cache
def x264_cpu_flags() -> int | None:
    """x264's detected CPU flags without AVX-512; None where no libx264 can be opened."""
    path = libx264_path()
    try:
        detect = ctypes.CDLL(path).x264_cpu_detect if path else None
    except (OSError, AttributeError):
        detect = None
    if detect is None:
        log.debug("libx264 not found for its CPU detection; x264 picks its own instruction sets")
        return None
    detect.restype = ctypes.c_uint32
    return detect() & ~X264_CPU_AVX512


def x264_params() -> dict[str, str]:
    """The encoder options that pin x264's instruction sets (empty where they cannot be pinned)."""
    flags = x264_cpu_flags()
    return {} if flags is None else {"x264-params": f"asm={flags}"}
