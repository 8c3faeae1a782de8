"""Plug-and-Play injection (Tumanyan et al., CVPR 2023; as TokenFlow uses it for video).

The UNet batch holds rows (b f): first the source branch's rows, then the edit branch's. For the
first steps of the edit, the source branch's conditional row is copied into every edit row
- at the output of chosen residual blocks (`feature_layers`, spatial features), and
- as the queries and keys of chosen self-attention layers (`attention_layers`), through the
  frame-attention processors' `qkv` hook, so the edit keeps the source's self-attention maps
  while its values (appearance) follow the target prompt.
Both branches are in the same orientation at every step (a FreeInv transform is applied to the
whole batch), so what is injected is spatially aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from vidinv.attention.processors import AttentionHook
from vidinv.errors import VidinvError


@dataclass
class RowLayout:
    """The rows of the (b f) batch, and which row each injected row copies: `sources[k]` is copied
    into `targets[k]`."""

    rows: int
    sources: tuple[int, ...]
    targets: tuple[int, ...]

    @classmethod
    def for_branches(cls, n_source: int, n_edit: int) -> RowLayout:
        """Rows [source rows..., edit rows...], each (uncond?, cond). An edit row copies the source
        row of the same role; with a single source row every edit row copies it (PnP, TokenFlow);
        with no source rows nothing is copied."""
        if n_source == 0:
            return cls(rows=n_edit, sources=(), targets=())
        roles = list(range(n_source))[-n_edit:] if n_source >= n_edit else [n_source - 1] * n_edit
        return cls(rows=n_source + n_edit, sources=tuple(roles), targets=tuple(range(n_source, n_source + n_edit)))


# module classes whose outputs PnP may inject: UNet residual blocks, SD3 / Flux transformer blocks
FEATURE_BLOCKS = ("ResnetBlock2D", "TransformerBlock", "CogVideoXBlock")
# transformer blocks whose output pair is (image, text), not SD3's / Flux's (text, image)
IMAGE_FIRST_BLOCKS = ("CogVideoXBlock",)


class PnPInjection(AttentionHook):
    """Copies the source row into the edit rows while `step < *_steps`; a context manager that
    installs its hooks on enter and removes them on exit."""

    def __init__(
        self,
        unet,
        handle,
        *,
        feature_layers: list[str],
        attention_layers: list[str] | None,
        feature_steps: int,
        attention_steps: int,
        family=None,
    ):
        """`attention_layers` None: the family's defaults (`ModelFamily.attention_layers`; SD 1.x
        when `family` is None)."""
        from vidinv.models.family import SD1_DEFAULT

        self.unet, self.handle = unet, handle
        modules = dict(unet.named_modules())
        missing = [name for name in feature_layers if name not in modules]
        if missing:
            blocks = [n for n, m in modules.items() if type(m).__name__.endswith(FEATURE_BLOCKS)]
            raise VidinvError(
                f"edit.pnp.feature_layers: {', '.join(missing)} not in this model (its blocks: {', '.join(blocks)})"
            )
        defaults = family or SD1_DEFAULT
        layers = defaults.attention_layers(handle.self_layers) if attention_layers is None else list(attention_layers)
        unknown = [name for name in layers if name not in handle.self_layers]
        if unknown:
            raise VidinvError(
                f"edit.pnp.attention_layers: {', '.join(unknown)} not self-attention layers of this UNet "
                f"(they are: {', '.join(handle.self_layers)})"
            )
        self.feature_modules = [modules[name] for name in feature_layers]
        self.attention_layers = frozenset(layers)
        self.feature_steps, self.attention_steps = feature_steps, attention_steps
        self.step: int | None = None
        self.layout: RowLayout | None = None
        self._removers: list = []

    def set_step(self, step: int, layout: RowLayout) -> None:
        self.step, self.layout = step, layout

    def _copy_rows(self, x: torch.Tensor) -> torch.Tensor:
        """x (b f ...) with each target row replaced by its source row."""
        layout = self.layout
        out = x.clone()
        out[list(layout.targets)] = x[list(layout.sources)]
        return out

    def qkv(self, layer, q, k, v, frames):
        if self.step is not None and self.step < self.attention_steps and layer in self.attention_layers:
            return self._copy_rows(q), self._copy_rows(k), v
        return q, k, v

    def _feature_hook(self, module, args, output):
        """A UNet residual block's output ((b f) c h w), or a transformer block's (text, image)
        stream pair (CogVideoX's: (image, text), the clip's video tokens (b n d)), of which the image
        stream ((b f) n d) is injected (the text stays the row's)."""
        if self.step is None or self.step >= self.feature_steps:
            return output
        if isinstance(output, tuple) and type(module).__name__ in IMAGE_FIRST_BLOCKS:
            return (self._copy_frames(output[0]), *output[1:])
        if isinstance(output, tuple):
            return (*output[:-1], self._copy_frames(output[-1]))
        return self._copy_frames(output)

    def _copy_frames(self, x: torch.Tensor) -> torch.Tensor:
        rows = rearrange(x, "(b f) ... -> b f ...", b=self.layout.rows)
        return rearrange(self._copy_rows(rows), "b f ... -> (b f) ...")

    def __enter__(self):
        self.handle.hooks.append(self)
        self._removers = [m.register_forward_hook(self._feature_hook) for m in self.feature_modules]
        return self

    def __exit__(self, *exc):
        for remover in self._removers:
            remover.remove()
        self._removers = []
        if self in self.handle.hooks:
            self.handle.hooks.remove(self)
        self.step = self.layout = None
        return False
