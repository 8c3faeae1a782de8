"""Video input/output: decode (decord, PyAV fallback), frame selection and resizing, writers."""

from vidinv.io.reading import FOLDER_FPS, read_video
from vidinv.io.video import Video, frames_from_uint8, frames_to_uint8, side_by_side
from vidinv.io.writing import write_video

__all__ = ["FOLDER_FPS", "Video", "frames_from_uint8", "frames_to_uint8", "read_video", "side_by_side", "write_video"]
