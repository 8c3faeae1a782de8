"""Frame-call arithmetic the methods' cost models share (the unit of vidinv's cost model: one
model evaluation of one frame for one prompt row): `Costs(config)` reads the config once and
holds the prompt rows of each branch, the step the edit starts from and the inversion's calls.
Each edit method states its own formula (`EditMethod.predicted_frame_calls`) from these;
`vidinv.planning` adds them up per stage."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from vidinv.config import Config


def rows(guidance: float, prompt: str, uncond_prompt: str = "") -> int:
    """Model rows of one branch: 2 with classifier-free guidance (`vidinv.guidance.is_guided`), else 1."""
    from vidinv.guidance import is_guided

    return 2 if is_guided(prompt, guidance, uncond_prompt) else 1


def inversion_method(config: Config):
    """The configured inversion method object (`inversion.method` with the inversion section)."""
    from vidinv.inversion.methods import get_inversion_method

    return get_inversion_method(config.inversion.method)(config.inversion)


@dataclass(frozen=True)
class Costs:
    """The shared terms of a config's frame-call formulas (docs/methods.md §6)."""

    config: Config

    @cached_property
    def method(self):
        """The inversion method object."""
        return inversion_method(self.config)

    @cached_property
    def sampler(self) -> type:
        """The inversion method's sampler class."""
        from vidinv.registry import SAMPLERS

        return SAMPLERS.get(self.method.sampler)

    @cached_property
    def steps(self) -> int:
        return self.config.inversion.steps

    @cached_property
    def source_rows(self) -> int:
        """Rows of the record's prompt (the inversion and a reconstructed source branch)."""
        return rows(self.method.guidance(), self.config.inversion.source_prompt)

    @cached_property
    def edit_rows(self) -> int:
        ed = self.config.edit
        return rows(ed.guidance_scale, ed.target_prompt, ed.negative_prompt)

    @cached_property
    def start(self) -> int:
        """The step edits and reconstructions start from (T_skip for an exact sampler)."""
        return self.sampler(range(self.steps)).default_start(self.config.edit.skip)  # its length only

    @cached_property
    def edit_steps(self) -> int:
        return self.steps - self.start

    def group(self, latent_hw: tuple[int, int]) -> int:
        """Model evaluations per step and row: MBDI's transform group, 1 for the other methods."""
        return self.method.evaluations_per_step(latent_hw)

    def inversion_calls(self, frames: int, latent_hw: tuple[int, int]) -> int:
        """F x steps x source rows x (|group| for mbdi); the step rule's evaluations for steps
        (`Sampler.evaluations`: 2 x steps for rf_solver, steps + 1 for fireflow)."""
        return frames * self.sampler.evaluations(self.steps) * self.source_rows * self.group(latent_hw)

    def reconstruction_calls(self, frames: int, latent_hw: tuple[int, int]) -> int:
        """F x S x source rows x (|group| for mbdi), from the start step (S: the rule's evaluations)."""
        return self.sampler.evaluations(self.edit_steps) * frames * self.source_rows * self.group(latent_hw)

    @cached_property
    def masked(self) -> bool:
        """The edit is confined to a mask (`edit.mask` or `edit.mask_words`)."""
        ed = self.config.edit
        return ed.mask is not None or bool(ed.mask_words)

    def mask_calls(self, frames: int, latent_hw: tuple[int, int], *, from_record: bool) -> int:
        """Frame-calls of a masked edit's source branch (`vidinv.editing.masks.MaskedSource`): none
        without a mask; the reconstruction run beside the edit (`reconstruction_calls`); or, when the
        source is the record's latents (`from_record`: exact samplers, PnP's inverted source), the
        reconstruction's last step for an exact sampler (F x source rows) and with `edit.mask_words`
        the source prompt's cond row at the latents (F x S); each x |group| for mbdi."""
        if not self.masked:
            return 0
        if not from_record:
            return self.reconstruction_calls(frames, latent_hw)
        last = self.source_rows if self.sampler.exact else 0
        words = self.edit_steps if self.config.edit.mask_words else 0
        return frames * (last + words) * self.group(latent_hw)
