"""A benchmark folder in the FiVE-Bench layout (Li et al., ICCV 2025, "FiVE: A Fine-grained Video
Editing Benchmark"; github.com/MinghanLi/FiVE-Bench, its `evaluation/evaluate.py` and the Wan-Edit
`edit.py` that read it, and the Hugging Face dataset LIMinghan/FiVE-Fine-Grained-Video-Editing-Benchmark):

    FOLDER/
      edit_prompt/edit1_FiVE.json ... edit6_FiVE.json   # one per edit type: a JSON list of edits
      images/<video_name>/00001.jpg ...                 # the clip as frames (optional if videos/ has it)
      videos/<video_name>.mp4                           # the clip as a video (optional if images/ has it)
      bmasks/<video_name>/00001.jpg ...                 # the edit's mask per frame (optional; white = edited)

Each edit (an entry of a JSON list, or the values of a JSON object) has `video_name`,
`source_prompt` and `target_prompt` (FiVE marks the edited words in [brackets]; they are removed,
as FiVE's evaluation does) and optionally `editing_type_id` (1..6; the `edit_types` filter) and
`save_dir`; other keys (FiVE-Acc's questions) are kept aside, unused. A video's clip is its frame
folder `images/<video_name>/` when there is one (FiVE's evaluation compares against these frames,
and the masks are named after them), else `videos/<video_name>.<ext>`; its mask is
`bmasks/<video_name>/` (a folder of images, one per frame) or `bmasks/<video_name>.<ext>` (a video
or one image).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vidinv.errors import VidinvError, first_line
from vidinv.io.decoders import IMAGE_SUFFIXES

PROMPTS_DIR = "edit_prompt"
FRAMES_DIR = "images"
VIDEOS_DIR = "videos"
MASKS_DIR = "bmasks"
REQUIRED_KEYS = ("video_name", "source_prompt", "target_prompt")


@dataclass(frozen=True)
class BenchmarkEdit:
    """One edit of the benchmark: a clip, its prompts, its mask (None: no masked metrics)."""

    video: str  # the entry's video_name
    clip: Path
    mask: Path | None
    source_prompt: str  # [brackets] removed
    target_prompt: str
    edit_type: str | None  # editing_type_id, as text
    prompt_file: str  # the JSON file's name
    index: int  # the entry's position in it
    extra: dict = field(default_factory=dict, compare=False)  # the entry's other keys


@dataclass
class Benchmark:
    root: Path
    edits: list[BenchmarkEdit]

    def clips(self) -> list[Path]:
        """Each clip once, in the order of the edits."""
        return list(dict.fromkeys(edit.clip for edit in self.edits))


def prompt_files(folder: Path) -> list[Path]:
    """The benchmark's prompt JSON files (`edit_prompt/*.json`), in natural order (edit2 before edit10)."""
    prompts = folder / PROMPTS_DIR
    if not prompts.is_dir():
        return []
    key = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]  # noqa: E731
    return sorted((p for p in prompts.iterdir() if p.suffix.lower() == ".json" and p.is_file()), key=key)


def is_benchmark(path: str | Path) -> bool:
    """A folder with the FiVE-Bench layout's prompt JSON (`edit_prompt/*.json`)."""
    return Path(path).is_dir() and bool(prompt_files(Path(path)))


def strip_brackets(prompt: str) -> str:
    """FiVE's prompts with the edited words' [brackets] removed (as its evaluation reads them)."""
    return prompt.replace("[", "").replace("]", "")


def _named(folder: Path, name: str, *, no_images: bool = False) -> Path | None:
    """`folder/name` when it is a folder of images, else `folder/name.<ext>` (a video or image file)."""
    path = folder / name
    if path.is_dir():
        return path
    if not folder.is_dir():
        return None
    for candidate in sorted(folder.glob(f"{glob_escape(name)}.*")):
        if candidate.is_file() and candidate.stem == name:
            if no_images and candidate.suffix.lower() in IMAGE_SUFFIXES:
                continue
            return candidate
    return None


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _entries(path: Path, fail: Callable[[str], None]) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        fail(f"{PROMPTS_DIR}/{path.name} is not valid JSON: {first_line(err)}")
    entries = list(data.values()) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        fail(f"{PROMPTS_DIR}/{path.name} must be a list of edits (video_name, source_prompt, target_prompt)")
    return entries


def load_benchmark(
    folder: str | Path,
    *,
    edit_types: list | None = None,
    videos: list | None = None,
    fail: Callable[[str], None] | None = None,
) -> Benchmark:
    """The edits of the benchmark at `folder`, those of `edit_types` (editing_type_id values) and
    `videos` (video names) only when given. A missing clip, a bad entry or no edit left is a
    one-line error (`fail`, else a VidinvError naming the folder)."""
    root = Path(folder)

    def default_fail(message: str):
        raise VidinvError(f"benchmark {root}: {message}")

    fail = fail or default_fail
    files = prompt_files(root)
    if not files:
        fail(f"no {PROMPTS_DIR}/*.json: not a benchmark folder in the FiVE-Bench layout (see docs/operations.md)")
    types = None if edit_types is None else {str(t) for t in edit_types}
    names = None if videos is None else {str(v) for v in videos}
    edits, seen_videos = [], set()
    for path in files:
        for i, entry in enumerate(_entries(path, fail)):
            where = f"{PROMPTS_DIR}/{path.name}[{i}]"
            if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in REQUIRED_KEYS):
                fail(f"{where} must be a mapping with the strings {', '.join(REQUIRED_KEYS)}")
            edit_type = None if entry.get("editing_type_id") is None else str(entry["editing_type_id"])
            video = entry["video_name"]
            seen_videos.add(video)
            if (types is not None and edit_type not in types) or (names is not None and video not in names):
                continue
            clip = _named(root / FRAMES_DIR, video) or _named(root / VIDEOS_DIR, video, no_images=True)
            if clip is None:
                fail(f"{where}: no clip for video {video!r} ({FRAMES_DIR}/{video}/ or {VIDEOS_DIR}/{video}.mp4)")
            extra = {k: v for k, v in entry.items() if k not in (*REQUIRED_KEYS, "editing_type_id")}
            edits.append(
                BenchmarkEdit(
                    video=video,
                    clip=clip,
                    mask=_named(root / MASKS_DIR, video),
                    source_prompt=strip_brackets(entry["source_prompt"]),
                    target_prompt=strip_brackets(entry["target_prompt"]),
                    edit_type=edit_type,
                    prompt_file=path.name,
                    index=i,
                    extra=extra,
                )
            )
    unknown = sorted(names - seen_videos) if names is not None else []
    if unknown:
        fail(f"videos: {unknown[0]!r} is in none of {PROMPTS_DIR}/*.json")
    if not edits:
        fail("no edit left after the edit_types / videos filters")
    return Benchmark(root, edits)
