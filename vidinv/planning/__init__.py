"""The run planner: what a run will cost, predicted from shapes alone before anything loads.

- `calls`: frame-calls per stage, one formula per method (the unit of vidinv's cost model);
- `shapes`: the clip's shape and component configs read from a folder;
- `memory`: peak bytes of a call on fake tensors, parameter bytes, the machine's free memory;
- `unet`, `flow`: the planners of UNet models and of flow transformers (SD3, Flux, Wan);
- `budget`: the `Plan` record and its one builder (device peak, host budget);
- `run`: `plan_run` (`vidinv plan`) and `check_fits` (the check before every run).
"""

from vidinv.planning.budget import Plan
from vidinv.planning.calls import MB, frame_calls
from vidinv.planning.memory import param_bytes
from vidinv.planning.run import check_fits, plan_run

__all__ = ["MB", "Plan", "check_fits", "frame_calls", "param_bytes", "plan_run"]
