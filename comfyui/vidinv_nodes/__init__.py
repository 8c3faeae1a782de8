"""vidinv's ComfyUI nodes: Load Model -> Invert Clip -> Edit -> IMAGE (the nodes are in vidinv/comfy.py).

Put this folder (a copy or a symlink) in ComfyUI/custom_nodes/ and install vidinv into ComfyUI's
Python (`pip install -e /path/to/vidinv`). Without an installed vidinv, a symlinked folder still
finds the checkout it belongs to (this folder is comfyui/vidinv_nodes inside it). docs/integrations.md
says what the nodes do and how they were tested.
"""

import sys
from pathlib import Path

try:
    from vidinv.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ModuleNotFoundError as err:
    if err.name != "vidinv":  # vidinv is there but one of its dependencies is not: say which
        raise
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "vidinv" / "__init__.py").is_file():
        raise ModuleNotFoundError(
            "vidinv_nodes needs the vidinv package in ComfyUI's Python: pip install -e /path/to/vidinv", name="vidinv"
        ) from err
    sys.path.insert(0, str(checkout))
    from vidinv.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
