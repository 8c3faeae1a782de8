"""The diffusers custom-pipeline file of `VidinvVideoEditPipeline` (the class is in
vidinv/diffusers_pipeline.py; this file only re-exports it).

diffusers copies a custom pipeline's file into its modules cache and imports the copy, so the
file it is given must not define the class itself (a second class of the same name), only bring
the installed package's: give it this file, or a folder holding a copy of it as `pipeline.py`
(`VidinvVideoEditPipeline.save_pretrained` writes one beside the model):

    import vidinv.pipeline
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", custom_pipeline=vidinv.pipeline.__file__, trust_remote_code=True
    )
"""

from vidinv.diffusers_pipeline import VidinvVideoEditPipeline, VidinvVideoEditPipelineOutput

__all__ = ["VidinvVideoEditPipeline", "VidinvVideoEditPipelineOutput"]
