"""vidinv: zero-shot text-driven video editing by diffusion inversion."""

from vidinv.callbacks import Step
from vidinv.config import Config, config_from_dict, load_config
from vidinv.editor import EditOutput, VideoEditor
from vidinv.errors import VidinvError

__all__ = ["Config", "EditOutput", "Step", "VideoEditor", "VidinvError", "config_from_dict", "load_config"]
__version__ = "0.1.0"
