"""PnP on flow transformers (SD3, Flux; issue 16 item 3): the source branch regenerated from the
flow inversion, its image tokens' q, k injected into the edit rows' joint attention (and a block's
image stream, when asked) at exactly the injected steps and layers."""

from __future__ import annotations

import pytest
import torch

from vidinv import VideoEditor
from vidinv.editing.injection import PnPInjection
from vidinv.inversion import api
from vidinv.models import load_models

FRAMES, STEPS = 3, 4


@pytest.fixture(scope="module", params=["tiny-sd3", "tiny-flux"])
def flow_models(request):
    return load_models(request.param, dtype="fp32", device="cpu")


def config(models, inversion="freeinv", **edit) -> dict:
    return {
        "model": {"pretrained": models.source, "frame_attention": "sparse_causal"},
        "inversion": {"method": inversion, "steps": STEPS, "source_prompt": "a red car", "guidance_scale": 1.0},
        "edit": {"method": "pnp", "target_prompt": "a red car", "guidance_scale": 1.0} | edit,
        "runtime": {"unet_chunk": 2},
    }


def source_latents() -> torch.Tensor:
    return torch.randn(FRAMES, 16, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("inversion", ["flow", "freeinv"])
def test_source_prompt_with_full_injection_is_the_reconstruction(flow_models, inversion):
    values = config(flow_models, inversion, inject_features=1.0, inject_attention=1.0)
    editor = VideoEditor(values, models=flow_models)
    out = editor.edit_latents(source_latents())
    torch.testing.assert_close(out.latents, api.reconstruct(flow_models, out.record, editor.config), atol=1e-5, rtol=0)
    assert out.stats.source_branch == "reconstructed" and out.stats.frame_calls == 2 * FRAMES * STEPS


def test_injection_copies_the_source_row_exactly_at_the_injected_steps_and_layers(flow_models, monkeypatch):
    """With another target prompt, the edit row's image q, k equal the source row's in the injected
    layers at steps < K_a and nowhere else; the injected block's image stream at steps < K_f. The
    source row runs while anything is injected (max(K_f, K_a) = 2 of 4 steps)."""
    seen, features = [], []
    qkv, feature_hook = PnPInjection.qkv, PnPInjection._feature_hook

    def observed_qkv(self, layer, q, k, v, frames):
        q, k, v = qkv(self, layer, q, k, v, frames)
        if len(q) == 2:  # the source row beside the edit row
            seen.append((self.step, layer, torch.equal(q[1], q[0]) and torch.equal(k[1], k[0])))
        return q, k, v

    def observed_features(self, module, args, output):
        out = feature_hook(self, module, args, output)
        if self.layout.rows == 2:
            image = out[-1].reshape(2, -1, *out[-1].shape[1:])  # (rows f) n d: source row, edit row
            features.append((self.step, torch.equal(image[1], image[0])))
        return out

    monkeypatch.setattr(PnPInjection, "qkv", observed_qkv)
    monkeypatch.setattr(PnPInjection, "_feature_hook", observed_features)
    block = "transformer_blocks.0"
    values = config(flow_models, inject_features=0.5, inject_attention=0.25, feature_layers=[block])
    out = VideoEditor(values, models=flow_models).edit_latents(source_latents(), "a blue bus")
    injected = set(out.stats.extra["attention_layers"])
    with_source = [(step, layer, equal) for step, layer, equal in seen if step is not None]
    assert {step for step, _, _ in with_source} == {0, 1}
    for step, layer, equal in with_source:
        assert equal == (step < 1 and layer in injected), (step, layer)
    assert {step for step, _ in features} == {0, 1} and all(equal for _, equal in features)
    assert injected and injected < {layer for _, layer, _ in with_source}  # some layers are not injected
