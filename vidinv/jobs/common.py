"""Steps every job shares (the loading itself lives in the facade, `vidinv.editor`)."""

from vidinv.editor import load_clip, load_models_for

__all__ = ["load_clip", "load_models_for"]
