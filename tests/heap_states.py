"""Different states of the C heap before a piece of code runs.

`scramble_heap(seed)` (`vidinv.hostmemory`, which `vidinv doctor` uses too) mallocs a few hundred
blocks of 1-400 KB through ctypes, fills each with a byte of the seed's choosing, and frees them
again in a shuffled order. Memory that the code under test then allocates without initialising
comes back holding that garbage, so a result that reads it changes with the seed.
Run as a script, it writes pictures under heap states of its own and prints their md5s (the
"fresh process" half of a heap-independence test).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from vidinv.hostmemory import scramble_heap

__all__ = ["md5_of", "scramble_heap"]


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def main(pictures_npz: str, audio: str, out_dir: str, seed: str) -> None:
    """Write every picture set of `pictures_npz` (key: "<name>.<mp4|mkv>[+audio]") after its own
    heap scramble; print {key: md5} as JSON."""
    from vidinv.io.audio import AudioSource
    from vidinv.io.writing import write_video

    source = AudioSource(Path(audio), 0.0, 1.0)
    digests = {}
    with np.load(pictures_npz) as sets:
        for i, key in enumerate(sorted(sets.files)):
            name, _, with_audio = key.partition("+")
            scramble_heap(int(seed) * 1000 + i)
            path = write_video(Path(out_dir) / name, sets[key], 8, audio=source if with_audio else None)
            digests[key] = md5_of(path)
            path.unlink()
    print(json.dumps(digests))


if __name__ == "__main__":
    main(*sys.argv[1:])
