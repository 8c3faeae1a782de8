"""CLIP-T and CLIP-F of an edited clip with a CLIP model (transformers' CLIPModel + CLIPProcessor).

CLIP-T: the mean over frames of the cosine similarity of each edited frame's CLIP image embedding
with the target prompt's text embedding, x100. CLIP-F: the mean over consecutive pairs of edited
frames of the cosine similarity of their image embeddings, x100. Frames are the 8-bit pictures of
`vidinv.metrics.ClipComparison`, preprocessed by the model's own image processor (PIL backend:
resize of the short side with bicubic, centre crop, CLIP's normalisation); the prompt is truncated
to the tokenizer's 77 tokens. The model runs in fp32; cosines are taken in fp64 of its embeddings.

Frames are embedded in groups of `GROUP` consecutive frames fixed by their index in the clip
(0-7, 8-15, ...), whatever chunks they arrive in, so a streamed clip gives the whole clip's scores to
the last bit. A model is a local folder or a hub id; a hub id goes through `vidinv.models.hub`'s
probe (one line in seconds when the hub is down and the model is not cached).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vidinv.errors import VidinvError, first_line
from vidinv.models.paths import looks_like_path

GROUP = 8  # frames per image-encoder call, at fixed positions in the clip


def clip_source(source: str, *, key: str = "--clip") -> tuple[str, dict]:
    """(what to load, from_pretrained options) for a CLIP model given as a folder or a hub id; a
    missing folder, or a hub id that is neither reachable nor cached: a one-line VidinvError naming
    `key`, before any weights are read."""
    from vidinv.models.hub import hub_local_only

    folder = Path(source).expanduser()
    if folder.is_dir():
        return str(folder), {"local_files_only": True}
    if folder.exists() or looks_like_path(source):
        raise VidinvError(f"{key}: {source} is not a folder (a CLIP model: a transformers folder or a hub id)")
    return source, {"local_files_only": hub_local_only(source, key=key, marker="config.json")}


def load_clip(source: str, *, key: str = "--clip", device: str | torch.device = "cpu"):
    """(CLIPModel in fp32 on `device`, CLIPProcessor) from a folder or a hub id; one-line errors."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, CLIPProcessor

    where, options = clip_source(source, key=key)
    backend = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    try:
        model = CLIPModel.from_pretrained(where, **options).float()
        image_processor = AutoImageProcessor.from_pretrained(where, **backend, **options)
        tokenizer = AutoTokenizer.from_pretrained(where, **options)
    except Exception as err:  # not found, not a CLIP model, gated: all one line
        raise VidinvError(f"{key}: cannot load the CLIP model {source!r}: {first_line(err)}") from err
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return model.to(device).eval(), processor


def _embedding(output) -> torch.Tensor:
    """get_image/text_features' result: a tensor (transformers 4) or an output whose pooler_output
    holds the projected embedding (transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipScores:
    """CLIP-T (with a prompt) and CLIP-F of the edited pictures fed by `update` (uint8 (f, H, W, 3),
    consecutive chunks); `result()` -> {"clip_t": .., "clip_f": ..} (x100; nan when undefined:
    CLIP-F of one frame). Without a prompt, only clip_f."""

    def __init__(self, model, processor, prompt: str | None):
        self.model, self.processor = model, processor
        self.device = next(model.parameters()).device
        self._text = None
        if prompt is not None:
            tokens = processor.tokenizer([prompt], truncation=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                self._text = _unit(_embedding(model.get_text_features(**tokens))[0])
        self._pending: list[torch.Tensor] = []  # preprocessed frames of the current group
        self._previous: torch.Tensor | None = None
        self._text_cos: list[float] = []
        self._frame_cos: list[float] = []

    @classmethod
    def load(cls, source: str, prompt: str | None, *, key: str = "--clip", device="cpu") -> ClipScores:
        return cls(*load_clip(source, key=key, device=device), prompt)

    def update(self, pictures: np.ndarray) -> None:
        for picture in pictures:  # one image at a time: the PIL processor treats each alone
            pixels = self.processor.image_processor(images=[picture], return_tensors="pt")["pixel_values"]
            self._pending.append(pixels[0])
            if len(self._pending) == GROUP:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        with torch.no_grad():
            pixels = torch.stack(self._pending).to(self.device, torch.float32)
            embeddings = _embedding(self.model.get_image_features(pixel_values=pixels))
        self._pending = []
        for embedding in embeddings:
            embedding = _unit(embedding)
            if self._text is not None:
                self._text_cos.append(float(embedding @ self._text))
            if self._previous is not None:
                self._frame_cos.append(float(embedding @ self._previous))
            self._previous = embedding

    def result(self) -> dict:
        self._flush()
        result = {"clip_f": _x100(self._frame_cos)}
        if self._text is not None:
            result = {"clip_t": _x100(self._text_cos), **result}
        return result


def _unit(embedding: torch.Tensor) -> torch.Tensor:
    embedding = embedding.detach().double().cpu()
    return embedding / embedding.norm()


def _x100(cosines: list[float]) -> float:
    return 100 * sum(cosines) / len(cosines) if cosines else math.nan
