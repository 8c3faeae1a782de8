"""vidinv: zero-shot text-driven video editing by diffusion inversion."""

from vidinv.callbacks import Step
from vidinv.config import Config, config_from_dict, load_config
from vidinv.editor import EditOutput, VideoEditor
from vidinv.errors import VidinvError

__all__ = [
    "Config",
    "EditOutput",
    "Step",
    "VideoEditor",
    "VidinvError",
    "VidinvVideoEditPipeline",
    "config_from_dict",
    "load_config",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The diffusers pipeline, imported on first use: `import vidinv` does not import diffusers."""
    if name in ("VidinvVideoEditPipeline", "VidinvVideoEditPipelineOutput"):
        from vidinv import diffusers_pipeline

        return getattr(diffusers_pipeline, name)
    raise AttributeError(f"module 'vidinv' has no attribute {name!r}")
