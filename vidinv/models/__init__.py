"""Model components: loading (tiny / hub / folder / single file) and the chunked VAE."""

from vidinv.models.loading import Models, load_models, resolve_device, resolve_dtype
from vidinv.models.text import encode_prompts
from vidinv.models.vae import decode_latents, encode_frames

__all__ = [
    "Models",
    "load_models",
    "resolve_device",
    "resolve_dtype",
    "encode_frames",
    "decode_latents",
    "encode_prompts",
]
