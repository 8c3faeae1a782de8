"""Plug-and-Play editing (Tumanyan et al., CVPR 2023): sample with the target prompt from the
inversion record, structure kept by injecting the source branch's features and self-attention
queries/keys into the edit rows (`injection.PnPInjection`).

The source branch (`branches.SourceBranch`) runs only while injection is active (the first
max(feature, attention) injection steps):
- `record`: the record's own latent of each step with the source prompt's cond row, injected
  into every edit row — for exact samplers (ddpm_ef: its regeneration IS the record) and for
  `edit.pnp.source_branch: inverted` (TokenFlow's choice);
- `reconstructed` (DDIM family, the default): the reconstruction run beside the edit with the
  record's prompt rows and guidance, each edit row copying the source row of its role. With the
  same prompt, guidance 1 and full injection the edit IS the reconstruction.

Frame-calls: F x (R_e x S + R_s x max(0, K - start)), with S = steps - start denoising steps,
R_e edit rows (2 with CFG), R_s source rows (the record's rows when reconstructed, else 1), K the
number of injection steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from vidinv.attention.inflate import ensure_frame_attention
from vidinv.editing.branches import EditDenoiser, SourceBranch, build_denoiser, sample_edit
from vidinv.editing.injection import PnPInjection
from vidinv.editing.masks import masked_source
from vidinv.editing.methods import EditMethod, EditResult
from vidinv.inversion.api import record_model
from vidinv.models.family import family_or_default


@dataclass
class PnPSettings:
    """PnP's injection (`edit.pnp`; TokenFlow injects with these too)."""

    inject_features: float = 0.8  # fraction of steps with residual-feature injection
    inject_attention: float = 0.5  # fraction of steps with self-attention q/k injection
    # layers (diffusers module names); null = the model family's defaults (vidinv.models.family):
    # SD 1.x/2.x up_blocks.1.resnets.1 and every decoder self-attention but the first module's
    feature_layers: list[str] | None = None  # residual blocks whose output features are injected
    attention_layers: list[str] | None = None  # self-attention layers whose queries / keys are injected; null as above
    # the source branch the edit injects from: the DDIM reconstruction run beside the edit, or the
    # stored inversion latents of each step (TokenFlow's choice); identical for ddpm_ef
    source_branch: str = "reconstructed"

    choices: ClassVar[dict] = {"source_branch": ("reconstructed", "inverted")}

    def check(self, prefix: str) -> None:
        from vidinv.config import require_fractions

        require_fractions(self, prefix, ("inject_features", "inject_attention"))


def injection_steps(config, steps: int) -> tuple[int, int]:
    """(feature steps, attention steps): the first fractions of the steps with injection."""
    pnp = config.edit.pnp
    return round(pnp.inject_features * steps), round(pnp.inject_attention * steps)


def injected_source_rows(costs) -> int:
    """Rows of the source branch that feeds injection (a `Costs` of the config): 1 from the record,
    the record's rows when reconstructed (`source_kind`)."""
    return 1 if source_kind(costs.config, costs.sampler) == "record" else costs.source_rows


def source_kind(config, sampler) -> str:
    """Where the injected source rows come from (module docstring)."""
    return "record" if sampler.exact or config.edit.pnp.source_branch == "inverted" else "reconstructed"


class PnPEdit(EditMethod):
    """PnP injection into the edit branch (module docstring)."""

    name = "pnp"
    settings = PnPSettings
    uses_control = True
    masks = True
    flow_models = True  # on SD3 / Flux: injection into the joint attention's image tokens
    denoiser = EditDenoiser  # TokenFlow replaces the UNet evaluation

    @classmethod
    def predicted_frame_calls(cls, config, frames, latent_hw, **context) -> int:
        """F x (R_e x S + R_s x max(0, K - start)): the source rows run only while injecting; with a
        mask, its source branch's calls (`Costs.mask_calls`)."""
        from vidinv.inversion.costs import Costs

        costs = Costs(config)
        injected = max(0, max(injection_steps(config, costs.steps)) - costs.start)
        per_group = frames * (costs.edit_rows * costs.edit_steps + injected_source_rows(costs) * injected)
        from_record = source_kind(config, costs.sampler) == "record"
        return per_group * costs.group(latent_hw) + costs.mask_calls(frames, latent_hw, from_record=from_record)

    def injection(self, steps: int) -> PnPInjection:
        """The configured PnP injection on the UNet (checks the layer names: one-line errors)."""
        ed = self.config.edit.pnp
        family = family_or_default(self.models)
        feature_steps, attention_steps = injection_steps(self.config, steps)
        return PnPInjection(
            self.models.denoiser,
            ensure_frame_attention(self.models.denoiser, self.config.model.attention),
            feature_layers=list(family.feature_layers) if ed.feature_layers is None else list(ed.feature_layers),
            attention_layers=None if ed.attention_layers is None else list(ed.attention_layers),
            feature_steps=feature_steps,
            attention_steps=attention_steps,
            family=family,
        )

    def check(self) -> None:
        self.injection(self.config.inversion.steps)

    def source_until(self, injection: PnPInjection, steps: int) -> int:
        """The source rows run at steps below this (PnP: while anything is injected)."""
        return max(injection.feature_steps, injection.attention_steps)

    def denoiser_options(self, record) -> dict:
        return {}

    @torch.no_grad()
    def edit(self, record, *, progress: bool = False, callback=None) -> EditResult:
        _, sampler, _ = record_model(self.models, record, self.config, self.control)
        injection = self.injection(len(sampler.table))
        source = SourceBranch(source_kind(self.config, sampler), self.source_until(injection, len(sampler.table)))
        denoiser = build_denoiser(
            self.models,
            record,
            self.config,
            sampler,
            source,
            injection,
            denoiser=self.denoiser,
            control=self.control,
            **self.denoiser_options(record),
        )
        masked = masked_source(self, record, source.kind == "record", injection)
        result = sample_edit(
            self.models, record, self.config, denoiser, progress=progress, callback=callback, masked=masked
        )
        result.stats.extra.update(
            feature_injection_steps=injection.feature_steps,
            attention_injection_steps=injection.attention_steps,
            attention_layers=sorted(injection.attention_layers),
        )
        return result


def pnp_edit(models, record, config, *, progress: bool = False) -> EditResult:
    """The PnP edit of `record` (function form of `PnPEdit`)."""
    return PnPEdit(models, config).edit(record, progress=progress)
