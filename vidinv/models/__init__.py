"""Model components: families, loading (tiny / hub / folder / single file), text conditioning,
ControlNet and the chunked VAE."""

from vidinv.models.bundle import ModelBundle
from vidinv.models.families import FAMILIES, Family
from vidinv.models.family import ModelFamily, detect_family
from vidinv.models.loading import Models, load_models, models_from_config, resolve_device, resolve_dtype
from vidinv.models.text import TextConditioning, encode_prompts, encode_text, unconditional_text
from vidinv.models.vae import decode_latents, encode_frames

__all__ = [
    "FAMILIES",
    "Family",
    "ModelBundle",
    "Models",
    "ModelFamily",
    "TextConditioning",
    "detect_family",
    "encode_text",
    "load_models",
    "models_from_config",
    "unconditional_text",
    "resolve_device",
    "resolve_dtype",
    "encode_frames",
    "decode_latents",
    "encode_prompts",
]
