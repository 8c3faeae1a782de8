"""Plug-and-Play editing (Tumanyan et al., CVPR 2023): sample with the target prompt from the
inversion record, structure kept by injecting the source branch's features and self-attention
queries/keys into the edit rows (`injection.PnPInjection`).

The source branch (`branches.SourceBranch`) runs only while injection is active (the first
max(feature, attention) injection steps):
- `record`: the record's own latent of each step with the source prompt's cond row, injected
  into every edit row — for exact samplers (ddpm_ef: its regeneration IS the record) and for
  `edit.source_branch: inverted` (TokenFlow's choice);
- `reconstructed` (DDIM family, the default): the reconstruction run beside the edit with the
  record's prompt rows and guidance, each edit row copying the source row of its role. With the
  same prompt, guidance 1 and full injection the edit IS the reconstruction.

Frame-calls: F x (R_e x S + R_s x max(0, K - start)), with S = steps - start denoising steps,
R_e edit rows (2 with CFG), R_s source rows (the record's rows when reconstructed, else 1), K the
number of injection steps.
"""

from __future__ import annotations

import torch

from vidinv.attention.inflate import ensure_frame_attention
from vidinv.editing.branches import EditDenoiser, SourceBranch, build_denoiser, sample_edit
from vidinv.editing.injection import PnPInjection
from vidinv.editing.methods import EditMethod, EditResult
from vidinv.inversion.api import record_model
from vidinv.models.family import family_or_default


def injection_steps(config, steps: int) -> tuple[int, int]:
    """(feature steps, attention steps): the first fractions of the steps with injection."""
    ed = config.edit
    return round(ed.inject_features * steps), round(ed.inject_attention * steps)


def source_kind(config, sampler) -> str:
    """Where the injected source rows come from (module docstring)."""
    return "record" if sampler.exact or config.edit.source_branch == "inverted" else "reconstructed"


class PnPEdit(EditMethod):
    """PnP injection into the edit branch (module docstring)."""

    name = "pnp"
    uses_control = True
    flow_models = True  # on SD3 / Flux: injection into the joint attention's image tokens
    denoiser = EditDenoiser  # TokenFlow replaces the UNet evaluation

    def injection(self, steps: int) -> PnPInjection:
        """The configured PnP injection on the UNet (checks the layer names: one-line errors)."""
        ed = self.config.edit
        family = family_or_default(self.models)
        feature_steps, attention_steps = injection_steps(self.config, steps)
        return PnPInjection(
            self.models.unet,
            ensure_frame_attention(self.models.unet, self.config.model.attention),
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
        result = sample_edit(self.models, record, self.config, denoiser, progress=progress, callback=callback)
        result.stats.update(
            feature_injection_steps=injection.feature_steps,
            attention_injection_steps=injection.attention_steps,
            attention_layers=sorted(injection.attention_layers),
        )
        return result


def pnp_edit(models, record, config, *, progress: bool = False) -> EditResult:
    """The PnP edit of `record` (function form of `PnPEdit`)."""
    return PnPEdit(models, config).edit(record, progress=progress)
