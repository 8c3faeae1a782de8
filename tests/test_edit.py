"""Editing (PnP): exactness against the reconstruction, injection, determinism, and the edit command."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO
from vidinv.attention import run_unet
from vidinv.attention.inflate import frame_attention_of
from vidinv.attention.processors import AttentionHook
from vidinv.cli import main
from vidinv.config import config_from_dict, in_sections, load_config
from vidinv.editing import pnp_edit
from vidinv.editing.branches import EditDenoiser
from vidinv.editing.injection import PnPInjection, RowLayout
from vidinv.editing.pnp import PnPEdit
from vidinv.errors import VidinvError
from vidinv.inversion import invert, reconstruct
from vidinv.jobs.common import load_models_for
from vidinv.jobs.edit import WRITES as EDIT_WRITES

STEPS = 5


def edit_config(method="ddim", **edit):
    values = {"prompt": "a bike", "guidance_scale": 1.0, "inject_features": 1.0, "inject_attention": 1.0, **edit}
    prompt = values.pop("prompt")
    return config_from_dict(
        {
            "model": {"frame_attention": "sparse_causal"},
            "inversion": {"method": method, "steps": STEPS, "source_prompt": "a bike"},
            "edit": in_sections({"target_prompt": prompt, **values}),
        }
    )


@pytest.fixture(scope="module")
def models():
    """The tiny model with sparse-causal attention installed (as the jobs load it)."""
    return load_models_for(edit_config())


def clip_latents(frames=3, h=8, w=8):
    return torch.randn(frames, 4, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["ddim", "freeinv", "mbdi"])
def test_same_prompt_guidance_1_full_injection_edit_equals_the_reconstruction(models, method):
    config = edit_config(method)
    record = invert(models, clip_latents(), config)
    expected = reconstruct(models, record, config)
    result = pnp_edit(models, record, config)
    torch.testing.assert_close(result.latents, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.source_latents, expected, atol=1e-4, rtol=0)


def test_ddpm_ef_edit_with_the_source_prompt_and_guidance_reproduces_the_input(models):
    """DDPM-EF regenerates exactly, so an edit with the source prompt and cfg_src from T_skip (no
    injection) gives back x0 and runs no source row: the record is the source branch."""
    config = edit_config("ddpm_ef", guidance_scale=3.5, inject_features=0.0, inject_attention=0.0)
    x0 = clip_latents()
    record = invert(models, x0, config)
    result = pnp_edit(models, record, config)
    torch.testing.assert_close(result.latents, x0, atol=1e-4, rtol=0)
    skip = round(0.36 * STEPS)
    assert result.stats.start_step == skip and result.stats.source_branch == "record"
    assert result.stats.frame_calls == 2 * 3 * (STEPS - skip)  # uncond + cond edit rows only


def test_ddpm_ef_source_row_is_the_records_latent_with_one_row_while_injecting(models):
    """With injection, the ddpm_ef source branch is one cond row at the record's latents, only
    for the injected steps: frame-calls F x (2 (S) + 1 (K - start))."""
    config = edit_config("ddpm_ef", prompt="a robot", guidance_scale=7.5, inject_features=0.8, inject_attention=0.4)
    record = invert(models, clip_latents(), config)
    result = pnp_edit(models, record, config)
    skip, injected = round(0.36 * STEPS), round(0.8 * STEPS)
    assert result.stats.source_steps == injected - skip
    assert result.stats.frame_calls == 3 * (2 * (STEPS - skip) + (injected - skip))


def test_a_different_target_prompt_changes_the_edit_and_the_same_seed_repeats_it(models):
    config = edit_config("freeinv", prompt="a robot", guidance_scale=7.5, inject_features=0.8, inject_attention=0.5)
    record = invert(models, clip_latents(), config)
    first, second = pnp_edit(models, record, config), pnp_edit(models, record, config)
    assert torch.equal(first.latents, second.latents)
    assert first.source_latents is None  # the source branch stopped after the last injected step
    assert first.stats.edit_rows == 2 and first.stats.source_steps == round(0.8 * STEPS)


FEATURE_LAYER = "up_blocks.1.resnets.1"  # edit.pnp.feature_layers' default


class QKVProbe(AttentionHook):
    """Records q, k, v (b f n inner) of every self-attention layer it sees, at the step in `seen`."""

    def __init__(self, seen: dict):
        self.seen = seen

    def qkv(self, layer, q, k, v, frames):
        self.seen[layer] = (q.clone(), k.clone(), v.clone())
        return q, k, v


def probed_pnp(seen: dict):
    """PnPEdit whose denoiser records, for every step i, seen[i] = {rows, the feature layer's output
    before ("raw") and after ("final") the injection, q/k/v before and after it, and whether the
    step's UNet prediction differs from the same call without the injection}."""

    class ProbedDenoiser(EditDenoiser):
        def run(self, branches, rows, t, step, emb, reduce=None):
            record = seen.setdefault(step, {"rows": len(rows), "raw_qkv": {}, "final_qkv": {}})
            layer = self.unet.get_submodule(FEATURE_LAYER)
            handle = frame_attention_of(self.unet)
            raw_hook = layer.register_forward_hook(lambda m, a, out: record.__setitem__("raw", out), prepend=True)
            final_hook = layer.register_forward_hook(lambda m, a, out: record.__setitem__("final", out))
            raw_probe, final_probe = QKVProbe(record["raw_qkv"]), QKVProbe(record["final_qkv"])
            handle.hooks.insert(0, raw_probe)  # before the injection
            handle.hooks.append(final_probe)  # after it
            try:
                pred = super().run(branches, rows, t, step, emb)
            finally:
                raw_hook.remove(), final_hook.remove()
                handle.hooks.remove(raw_probe), handle.hooks.remove(final_probe)
            layout = self.hook.layout
            self.hook.__exit__(None, None, None)  # the same call, no injection
            try:
                plain = run_unet(self.unet, branches, t, emb, chunk=self.chunk, rows=rows)
            finally:
                self.hook.__enter__()
                self.hook.set_step(step, layout)
            record["injected"] = not torch.equal(pred, plain)
            return pred if reduce is None else reduce(pred)  # the rows' predictions, reduced as each pass would be

    class ProbedPnP(PnPEdit):
        denoiser = ProbedDenoiser

    return ProbedPnP


def test_injection_fractions_inject_the_source_rows_exactly_at_the_steps_before_k(models):
    """k_f = round(0.4 N) = 2 feature steps, k_a = round(0.8 N) = 4 attention steps, N = 5: at step
    i < k_f the edit rows' feature-layer output IS the source row's at that layer and step; at
    i < k_a the edit rows' self-attention q, k in the injected layers ARE the source row's (v their
    own); everything else is untouched, and the UNet's prediction differs from the uninjected
    call's exactly at the steps i < k_a (the source rows run exactly then)."""
    config = edit_config("ddim", prompt="a robot", guidance_scale=7.5, inject_features=0.4, inject_attention=0.8)
    config.runtime.unet_chunk = 0
    record = invert(models, clip_latents(), config)
    seen = {}
    result = probed_pnp(seen)(models, config).edit(record)
    k_f, k_a = 2, 4
    injected_layers = set(result.stats.extra["attention_layers"])
    assert sorted(seen) == list(range(STEPS)) and injected_layers
    assert [seen[i]["rows"] for i in range(STEPS)] == [3] * k_a + [2] * (STEPS - k_a)  # source, uncond, cond
    assert [seen[i]["injected"] for i in range(STEPS)] == [True] * k_a + [False] * (STEPS - k_a)
    for i, step in seen.items():
        raw, final = (step[key].unflatten(0, (step["rows"], -1)) for key in ("raw", "final"))
        if i < k_f:
            assert all(torch.equal(final[r], raw[0]) for r in range(3))
        else:
            assert torch.equal(final, raw)
        assert step["raw_qkv"].keys() == step["final_qkv"].keys() >= injected_layers
        for layer, (q, k, v) in step["raw_qkv"].items():
            q_final, k_final, v_final = step["final_qkv"][layer]
            assert torch.equal(v_final, v)
            if i < k_a and layer in injected_layers:
                assert all(torch.equal(q_final[r], q[0]) and torch.equal(k_final[r], k[0]) for r in range(3))
            else:
                assert torch.equal(q_final, q) and torch.equal(k_final, k)


@pytest.mark.parametrize("source_branch", ["inverted", "reconstructed"])
def test_the_inverted_source_branch_runs_at_the_records_latents_at_every_step(models, source_branch):
    """With `source_branch: inverted` the source row's latent at step i is record.latents[i]
    exactly, for every step it runs; the reconstructed branch (DDIM: inexact) leaves them."""
    config = edit_config(
        "ddim",
        prompt="a robot",
        guidance_scale=7.5,
        inject_features=0.8,
        inject_attention=0.8,
        source_branch=source_branch,
    )
    record = invert(models, clip_latents(), config)
    seen = {}

    class SourceProbe(EditDenoiser):
        def run(self, branches, rows, t, step, emb, reduce=None):
            if len(branches) == 2:
                seen[step] = branches[0].clone()
            return super().run(branches, rows, t, step, emb, reduce)

    class ProbedPnP(PnPEdit):
        denoiser = SourceProbe

    ProbedPnP(models, config).edit(record)
    assert sorted(seen) == list(range(round(0.8 * STEPS)))
    at_record = [torch.equal(latent, record.latents[i]) for i, latent in seen.items()]
    if source_branch == "inverted":
        assert all(at_record)
    else:
        assert at_record[0] and not any(at_record[1:])


@pytest.mark.parametrize("source_branch, kept", [("inverted", 1), ("reconstructed", 2)])
def test_the_source_rows_predictions_are_kept_only_where_a_sampler_steps_them(models, source_branch, kept):
    """A reconstructed source branch gets its guided prediction back beside the edit's; an inverted
    one (read from the record) only feeds the hooks, so the denoiser returns the edit's alone."""
    config = edit_config(
        "ddim",
        prompt="a robot",
        guidance_scale=7.5,
        inject_features=0.4,
        inject_attention=0.4,
        source_branch=source_branch,
    )
    record = invert(models, clip_latents(), config)
    returned = {}

    class RowCounter(EditDenoiser):
        def __call__(self, z, t):
            pred = super().__call__(z, t)
            returned.setdefault(len(z), set()).add(pred.shape[0])
            assert pred.shape[1:] == z.shape[1:]
            return pred

    class CountedPnP(PnPEdit):
        denoiser = RowCounter

    CountedPnP(models, config).edit(record)
    assert returned == {2: {kept}, 1: {1}}


def test_injected_rows_carry_the_source_rows_features_and_hooks_are_removed(models):
    """Inside an injected step, the edit rows' output of the feature layer equals the source row's."""
    unet, handle = models.unet, frame_attention_of(models.unet)
    layer = "up_blocks.1.resnets.1"
    captured = {}
    injection = PnPInjection(
        unet, handle, feature_layers=[layer], attention_layers=None, feature_steps=1, attention_steps=1
    )
    z = torch.randn(3, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    emb = torch.randn(3, 77, 32, generator=torch.Generator().manual_seed(2))
    with injection:
        # registered after the injection's hook, so it sees the injected output
        probe = unet.get_submodule(layer).register_forward_hook(lambda m, a, out: captured.__setitem__("x", out))
        try:
            injection.set_step(0, RowLayout.for_branches(n_source=1, n_edit=2))
            run_unet(unet, z, 500, emb)
        finally:
            probe.remove()
    assert not injection._removers and injection not in handle.hooks
    rows = captured["x"].reshape(3, 3, *captured["x"].shape[1:])
    torch.testing.assert_close(rows[1], rows[0])
    torch.testing.assert_close(rows[2], rows[0])


def test_a_guided_source_injects_row_by_role():
    layout = RowLayout.for_branches(n_source=2, n_edit=2)
    assert layout.sources == (0, 1) and layout.targets == (2, 3)
    assert RowLayout.for_branches(n_source=2, n_edit=1).sources == (1,)
    assert RowLayout.for_branches(n_source=1, n_edit=2).sources == (0, 0)


def test_default_attention_layers_are_the_decoder_self_attention_layers_but_the_first(models):
    handle = frame_attention_of(models.unet)
    layers = PnPInjection(
        models.unet, handle, feature_layers=[], attention_layers=None, feature_steps=0, attention_steps=0
    ).attention_layers
    layers = sorted(layers, key=handle.self_layers.index)
    decoder = [name for name in handle.self_layers if name.startswith("up_blocks.")]
    assert layers == decoder[1:] and len(layers) >= 1


@pytest.mark.parametrize(
    ("key", "value"),
    [("feature_layers", ["up_blocks.9.resnets.0"]), ("attention_layers", ["mid_block.nonsense.attn1"])],
)
def test_unknown_injection_layers_are_a_one_line_error_listing_the_valid_ones(models, key, value):
    config = edit_config("ddim", **{key: value})
    record = invert(models, clip_latents(frames=2), config)
    with pytest.raises(VidinvError, match=f"edit.pnp.{key}") as err:
        pnp_edit(models, record, config)
    assert "\n" not in str(err.value)


def test_edit_command_writes_every_output_as_configured(tmp_path, capsys):
    from vidinv.io import read_video

    out = tmp_path / "run"
    args = [
        "video.num_frames=4",
        "video.height=64",
        "video.width=96",
        "video.stride=2",
        "inversion.steps=3",
        f"runtime.output_dir={out}",
    ]
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 0
    assert "edited 4 frames 64x96" in capsys.readouterr().out
    for name in (*EDIT_WRITES, "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "inversion" / "record.json").is_file()
    assert not list(out.rglob("*.partial*"))
    edited, side = read_video(out / "edited.mp4"), read_video(out / "side_by_side.mp4")
    assert edited.frames.shape == (4, 3, 64, 96) and edited.fps == 12.5  # 25 fps / stride 2
    assert side.frames.shape == (4, 3, 64, 192)
    assert load_config(out / "config.yaml") == load_config(REPO / "configs/demo.yaml", args)
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 4 and metrics["frame_calls"]["edit"] == 4 * (2 * 3 + 1 * round(0.8 * 3))
    assert set(metrics["temporal_consistency"]) >= {"warp_error_source", "warp_error_edited"}

    # a second run into the same folder is refused; with overwrite the record is reused
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 2
    assert main(["--quiet", "edit", "configs/demo.yaml", *args, "runtime.overwrite=true"]) == 0


def test_video_editor_api_edits_in_memory_without_touching_the_disk(tmp_path, monkeypatch):
    from vidinv import VideoEditor

    monkeypatch.chdir(tmp_path)  # anything written would land here
    editor = VideoEditor.from_pretrained(
        "tiny",
        inversion={"steps": 3},
        video={"num_frames": 2, "height": 64, "width": 64, "path": str(REPO / "samples/bikes.mp4")},
    )
    clip = editor.read()
    out = editor.edit(clip.frames, "a robot", source_prompt="a man")
    assert out.frames.shape == clip.frames.shape and out.frames.abs().max() <= 1
    assert out.record.source_prompt == "a man" and not out.record_reused
    again = editor.edit(clip.frames, "a robot", record=out.record)
    assert again.record_reused and torch.equal(again.latents, out.latents)
    assert list(tmp_path.iterdir()) == []


def test_chunked_edit_equals_the_whole_clip_edit(models):
    """unet_chunk splits frames; injection and cross-frame anchors must not notice."""
    config = edit_config("freeinv", prompt="a robot", guidance_scale=7.5)
    record = invert(models, clip_latents(frames=5), config)
    whole = pnp_edit(models, record, config).latents
    config.runtime.unet_chunk = 2
    chunked = pnp_edit(models, record, config).latents
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)


def test_ctrl_c_during_the_edit_exits_130_and_leaves_no_finished_looking_output(tmp_path, monkeypatch, capsys):
    from vidinv.editing.pnp import PnPEdit

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PnPEdit, "edit", interrupted)
    out = tmp_path / "run"
    args = ["video.num_frames=2", "video.height=64", "video.width=64", "inversion.steps=2", f"runtime.output_dir={out}"]
    assert main(["--quiet", "edit", "configs/demo.yaml", *args]) == 130
    assert "interrupted" in capsys.readouterr().err
    for name in ("edited.mp4", "side_by_side.mp4", "metrics.json"):
        assert not (out / name).exists()
    assert not list(out.rglob("*.partial*"))


@pytest.mark.parametrize("method", ["pnp", "tokenflow", "fatezero"])
def test_every_edit_method_runs_in_bf16(method):
    """Half precision (as on GPUs): the UNet and VAE in bf16, the samplers' latents in fp32."""
    from vidinv import VideoEditor

    editor = VideoEditor.from_pretrained(
        "tiny",
        model={"dtype": "bf16", "device": "cpu"},
        inversion={"steps": 2, "source_prompt": "a man"},
        edit={"method": method, "keyframe_stride": 2},
    )
    assert editor.models.unet.dtype == torch.bfloat16
    frames = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = editor.edit(frames, "a robot")
    assert out.frames.shape == frames.shape and torch.isfinite(out.frames).all()
    assert out.latents.dtype == torch.float32


def test_bad_injection_layers_fail_before_the_inversion(tmp_path):
    from vidinv import VideoEditor

    editor = VideoEditor.from_pretrained("tiny", inversion={"steps": 2}, edit={"feature_layers": ["nope"]})
    frames = torch.zeros(2, 3, 64, 64)
    with pytest.raises(VidinvError, match="edit.pnp.feature_layers"):
        editor.edit(frames, "a robot", record_dir=tmp_path / "inversion")
    assert not (tmp_path / "inversion").exists()


@pytest.mark.slow
def test_each_run_reports_its_own_peak_memory_not_an_earlier_one_of_the_process(tmp_path):
    """A process that held 1 GB more before the edit (a batch's earlier item, an app's earlier
    request) reports the edit's own peak: the peak is reset at the start of each run."""
    import json

    import numpy as np

    from vidinv.editor import peak_memory_mb

    spike = np.ones(2**30, np.uint8)  # touched: resident
    before = peak_memory_mb(torch.device("cpu"))
    del spike
    out = tmp_path / "run"
    argv = ["video.num_frames=2", "video.height=32", "video.width=32", "inversion.steps=2", f"runtime.output_dir={out}"]
    assert main(["--quiet", "edit", "configs/demo.yaml", *argv]) == 0
    peak = json.loads((out / "metrics.json").read_text())["peak_memory"]
    assert max(peak.values()) < before - 512  # MB: the freed GB is not in this run's peak
