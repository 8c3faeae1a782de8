"""encode_text: parity with diffusers' SD and SDXL pipelines' encode_prompt, row helpers."""

from __future__ import annotations

import pytest
import torch

from vidinv.models import TextConditioning, encode_prompts, encode_text, unconditional_text

PROMPTS = ["a red bike", "a robot riding a bike"]


def sdxl_pipeline(models):
    from diffusers import StableDiffusionXLPipeline

    names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
    return StableDiffusionXLPipeline(**{name: getattr(models, name) for name in names})


def test_sdxl_encode_text_equals_diffusers_encode_prompt(sdxl):
    pipe = sdxl_pipeline(sdxl)
    emb, neg_emb, pooled, neg_pooled = pipe.encode_prompt(PROMPTS, device="cpu", do_classifier_free_guidance=True)
    text, uncond = encode_text(sdxl, PROMPTS), unconditional_text(sdxl, "")
    assert torch.equal(text.emb, emb) and torch.equal(text.added["text_embeds"], pooled)
    assert torch.equal(uncond.emb, neg_emb[:1]) and torch.equal(uncond.added["text_embeds"], neg_pooled[:1])


def test_sdxl_negative_prompt_is_encoded_like_diffusers(sdxl):
    pipe = sdxl_pipeline(sdxl)
    _, neg_emb, _, neg_pooled = pipe.encode_prompt(
        PROMPTS[:1], device="cpu", do_classifier_free_guidance=True, negative_prompt="blurry"
    )
    uncond = unconditional_text(sdxl, "blurry")
    assert torch.equal(uncond.emb, neg_emb) and torch.equal(uncond.added["text_embeds"], neg_pooled)


@pytest.mark.parametrize("size", [None, (96, 160)])
def test_sdxl_time_ids_equal_diffusers_add_time_ids(sdxl, size):
    pipe = sdxl_pipeline(sdxl)
    height, width = size or (sdxl.family.size, sdxl.family.size)
    projection = sdxl.text_encoder_2.config.projection_dim
    want = pipe._get_add_time_ids((height, width), (0, 0), (height, width), torch.float32, projection)
    got = encode_text(sdxl, PROMPTS, size=size).added["time_ids"]
    assert torch.equal(got, want.repeat(len(PROMPTS), 1))


def test_sd_encode_text_equals_diffusers_encode_prompt(tiny_models):
    from diffusers import StableDiffusionPipeline

    m = tiny_models
    pipe = StableDiffusionPipeline(
        m.vae, m.text_encoder, m.tokenizer, m.unet, m.scheduler, None, None, requires_safety_checker=False
    )
    emb, neg = pipe.encode_prompt(PROMPTS, "cpu", 1, True)
    text = encode_text(m, PROMPTS)
    assert text.added is None and torch.equal(text.emb, emb)
    assert torch.equal(unconditional_text(m, "").emb, neg[:1])
    assert torch.equal(encode_prompts(m, PROMPTS), emb)


def test_select_and_cat_build_guidance_rows_in_order(sdxl):
    text = encode_text(sdxl, ["", *PROMPTS])
    rows = TextConditioning.cat([text.select([2]), text.select(slice(0, 2))])
    want = encode_text(sdxl, [PROMPTS[1], "", PROMPTS[0]])
    assert len(rows) == 3 and torch.equal(rows.emb, want.emb)
    assert all(torch.equal(rows.added[k], want.added[k]) for k in want.added)


def test_sdxl_unconditional_row_drives_the_unet_with_zero_text(sdxl):
    from vidinv.attention import run_unet

    uncond = unconditional_text(sdxl, "")
    assert not uncond.emb.any() and not uncond.added["text_embeds"].any()
    assert torch.equal(uncond.added["time_ids"], encode_text(sdxl, [""]).added["time_ids"])
    z = torch.randn(1, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert run_unet(sdxl.unet, z, torch.tensor(10), uncond.emb, added_cond_kwargs=uncond.added).isfinite().all()
