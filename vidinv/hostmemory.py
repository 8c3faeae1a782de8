"""Host memory that follows the chunk: large blocks go back to the system when freed.

A pipeline over a long clip allocates and frees whole-clip latent tensors (a few MB each) every
step. glibc's malloc raises its mmap threshold dynamically after such frees, after which those
blocks come from the heap, fragment it, and stay in the resident size. A fixed threshold keeps
every block of `threshold` bytes or more mmapped, returned to the system on free. Measured
(docs/benchmarks.md): 121 -> 39 KB per added frame of peak RSS for an edit at 128x128 (64 vs 208
frames). A no-op where glibc is not the allocator.

`scramble_heap` leaves the C heap in a state of a seed's choosing (for `vidinv doctor` and the
tests that check a result does not depend on what the heap held before).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc malloc.h
DEFAULT_THRESHOLD = 1 << 20


def _libc():
    """glibc's C library (None where it cannot be loaded)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> bool:
    """Give the heap's free memory back to the system now (glibc malloc_trim); True if any was.
    For after freeing many blocks below the mmap threshold at once (an x264 encoder's frame pool)."""
    try:
        return bool(_libc().malloc_trim(0))
    except AttributeError:  # no libc, or not glibc
        return False


def release_large_blocks(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; True if it was set."""
    try:
        return bool(_libc().mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except AttributeError:  # no libc, or not glibc
        return False


def scramble_heap(seed: int, blocks: int = 200) -> bool:
    """Fill `blocks` fresh heap blocks (1-400 KB, sizes and bytes drawn from `seed`) and free them
    in a shuffled order: memory allocated next without being initialised holds that garbage, so a
    result that reads it changes with the seed. False (nothing done) where no C library loads."""
    import numpy as np

    libc = _libc()
    if libc is None:
        return False
    malloc, memset, free = libc.malloc, libc.memset, libc.free
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    memset.restype, memset.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    rng = np.random.default_rng(seed)
    pointers = []
    for _ in range(blocks):
        size = int(rng.integers(1024, 400 * 1024))
        pointer, byte = malloc(size), int(rng.integers(0, 256))
        if pointer:
            memset(pointer, byte, size)
        pointers.append(pointer)
    for index in rng.permutation(len(pointers)):
        if pointers[index]:
            free(pointers[index])
    return True
