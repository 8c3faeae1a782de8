"""Registries of named plug-ins (inversion methods, edit methods, samplers).

A registry maps a name to a class, given as the class itself or as a lazy "module:Class" path
(built-ins are lazy, so listing names imports nothing heavy). Third-party packages add entries
through entry points of the registry's group, e.g. in their pyproject.toml:

    [project.entry-points."vidinv.edit_methods"]
    my_edit = "my_package.edit:MyEdit"

and code adds them with `register(name, cls)`. Names are checked by the config (its one-line
errors list `names()`), `vidinv info` and the CLI.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from vidinv.errors import VidinvError


class Registry:
    """name -> plug-in class, from built-ins, `register` calls and installed entry points."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]):
        self.kind, self.group = kind, group
        self._entries: dict[str, object] = dict(builtins)
        self._discovered = False

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in entry_points(group=self.group):
            self._entries.setdefault(ep.name, ep)

    def register(self, name: str, cls, *, replace: bool = False) -> None:
        """Add `cls` (a class or a "module:Class" path) under `name`; an existing name needs `replace`."""
        self._discover()
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{self.kind} name {name!r}: use letters, digits, '_' or '-'")
        if name in self._entries and not replace and self._entries[name] is not cls:
            raise ValueError(f"{self.kind} {name!r} is registered already (pass replace=True to replace it)")
        self._entries[name] = cls

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str):
        """The class registered as `name` (loaded on first use); a VidinvError names the available ones."""
        self._discover()
        if name not in self._entries:
            raise VidinvError(f"{self.kind} {name!r} is not registered (available: {', '.join(self.names())})")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":")
            entry = getattr(importlib.import_module(module), attr)
        elif hasattr(entry, "load") and not isinstance(entry, type):  # an entry point
            entry = entry.load()
        self._entries[name] = entry
        return entry


INVERSION_METHODS = Registry(
    "inversion method",
    "vidinv.inversion_methods",
    {
        "ddim": "vidinv.inversion.methods:DDIMInversion",
        "freeinv": "vidinv.inversion.methods:FreeInvInversion",
        "mbdi": "vidinv.inversion.methods:MBDIInversion",
        "ddpm_ef": "vidinv.inversion.methods:EditFriendlyDDPMInversion",
        "flow": "vidinv.inversion.methods:FlowInversion",
        "rf_solver": "vidinv.inversion.flow_solvers:RFSolverInversion",
        "fireflow": "vidinv.inversion.flow_solvers:FireFlowInversion",
    },
)
EDIT_METHODS = Registry(
    "edit method",
    "vidinv.edit_methods",
    {
        "pnp": "vidinv.editing.pnp:PnPEdit",
        "tokenflow": "vidinv.editing.tokenflow:TokenFlowEdit",
        "fatezero": "vidinv.editing.fatezero:FateZeroEdit",
        "flowedit": "vidinv.editing.flowedit:FlowEdit",
    },
)
SAMPLERS = Registry(
    "sampler",
    "vidinv.samplers",
    {
        "ddim": "vidinv.inversion.samplers:DDIMSampler",
        "ddpm_ef": "vidinv.inversion.samplers:EditFriendlyDDPMSampler",
        "flow": "vidinv.inversion.flow:FlowSampler",
        "rf_solver": "vidinv.inversion.flow_solvers:RFSolverSampler",
        "fireflow": "vidinv.inversion.flow_solvers:FireFlowSampler",
    },
)


def runs_on_video_model(method, family) -> bool:
    """Whether an edit method (its class or an instance) runs on a native video model of `family`: a video method whose flow-ness
    is the family's (FlowEdit on Wan), or a joint-attention one on a family with joint attention (PnP on
    CogVideoX: its injection into the video tokens' q, k)."""
    flow = getattr(family, "flow", True)
    if method.video_models:
        return flow or not method.flow_models
    return method.flow_models and getattr(family, "joint_attention", None) is not None
