"""Batches of edits from a manifest (`vidinv batch`): clips x prompt pairs x a config grid, each clip
inverted once per inversion config, run here or on Ray, summarised in CSV/JSON and an HTML gallery."""

from vidinv.batch.runner import run_batch

__all__ = ["run_batch"]
