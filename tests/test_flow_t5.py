"""`model.t5: false` loads SD3 without its T5 encoder (diffusers' `text_encoder_3=None`, the
documented memory-saving way): the conditions equal diffusers' own T5-less pipeline's; Flux and
UNet models refuse it in one line (issue 16 item 2)."""

from __future__ import annotations

import pytest
import torch

from vidinv.errors import VidinvError
from vidinv.models import load_models
from vidinv.models.flow import flow_condition
from vidinv.models.tiny_flow import build_tiny_sd3_components


@pytest.fixture(scope="module")
def sd3_with_t5(tmp_path_factory):
    from diffusers import StableDiffusion3Pipeline

    folder = tmp_path_factory.mktemp("sd3") / "with_t5"
    StableDiffusion3Pipeline(**build_tiny_sd3_components(t5=True)).save_pretrained(folder)
    return folder


def parameters(models) -> int:
    return sum(
        p.numel() for m in models.pipeline.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters()
    )


def test_dropping_t5_gives_diffusers_t5_less_conditions_and_fewer_weights(sd3_with_t5, monkeypatch):
    from diffusers import StableDiffusion3Pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    full = load_models(str(sd3_with_t5), dtype="fp32", device="cpu")
    dropped = load_models(str(sd3_with_t5), dtype="fp32", device="cpu", t5=False)
    assert full.pipeline.text_encoder_3 is not None and dropped.pipeline.text_encoder_3 is None
    assert parameters(dropped) < parameters(full)
    reference = StableDiffusion3Pipeline.from_pretrained(str(sd3_with_t5), text_encoder_3=None, tokenizer_3=None)
    embeds, _, pooled, _ = reference.encode_prompt(
        "a red car",
        "a red car",
        "a red car",
        do_classifier_free_guidance=False,
        max_sequence_length=dropped.max_sequence_length,
    )
    cond = flow_condition(dropped, ["a red car"])
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    with_t5 = flow_condition(full, ["a red car"])
    assert not torch.equal(with_t5.embeds, cond.embeds)  # T5's rows were there before


@pytest.mark.parametrize("name", ["tiny-flux", "tiny"])
def test_dropping_t5_where_it_cannot_be_dropped_is_a_one_line_error(name):
    with pytest.raises(VidinvError, match="model.t5") as err:
        load_models(name, device="cpu", t5=False)
    assert "\n" not in str(err.value)
