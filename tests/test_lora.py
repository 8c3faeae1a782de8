"""model.lora on every family (SD 1.x, SDXL, SD3, Flux, Wan): tiny LoRA files written here with peft
(seeded random lora_B, so that they change outputs) and diffusers' `save_lora_weights`, in diffusers'
layout and, for SD 1.x, Kohya's. Scale 0 equals no LoRA bit for bit, scale 1 changes the output; the
result equals diffusers' own pipeline with the same LoRA loaded (fused and unfused, exact); fused and
unfused agree within FUSE_RTOL; two LoRAs compose; a LoRA for another family, a missing file and a
bad entry are one-line errors before any inversion; the record's fingerprint includes the LoRAs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import diffusers
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import moving_square
from vidinv.cli import main
from vidinv.config import config_from_dict, load_config
from vidinv.errors import VidinvError
from vidinv.models import FAMILIES, load_models
from vidinv.models.lora import lora_families, lora_keys, lora_pipeline, lora_specs
from vidinv.models.tiny import TINY_BUILDERS
from vidinv.models.tiny_configs import T5_TOKENS, TINY_HUNYUAN_TEMPLATE, TINY_PIPELINES
from vidinv.models.tiny_flow import TINY_FLOW_BUILDERS, tiny_flow_pipeline

# SD 1.x, SDXL, SD3, Flux, Wan 2.1, Wan 2.2 (TI2V-5B's layout), HunyuanVideo, LTX-Video, CogVideoX
TINIES = [
    "tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-wan", "tiny-wan22", "tiny-hunyuan", "tiny-ltx", "tiny-cogvideox"
]  # fmt: skip
VIDEO = ("tiny-wan", "tiny-wan22", "tiny-hunyuan", "tiny-ltx", "tiny-cogvideox")  # their pipelines make frames
# the same, tiny-sdxl in the slow lane (its tests load it 4-5 times: ~5 s on 2 busy cores)
LANED = [pytest.param(t, marks=pytest.mark.slow) if t == "tiny-sdxl" else t for t in TINIES]
FAMILY_OF = {tiny: f for f in FAMILIES.values() for tiny in f.tiny_names}
DENOISER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # attention projections, in every family's denoiser
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # CLIP's
FUSE_RTOL = 1e-5  # fused vs unfused, relative max difference of the latents (measured: <= 2e-6 in fp32)


def _lora_state(module: torch.nn.Module, targets: list[str], rank: int) -> dict:
    """peft LoRA layers on `module`'s `targets` (lora_A and lora_B both random: init_lora_weights=False),
    as peft's state dict; `module` keeps the adapter (a throwaway copy)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    inject_adapter_in_model(config, module)
    return get_peft_model_state_dict(module)


def write_lora(path: Path, tiny: str, seed: int, *, text: bool = False, rank: int = 4) -> Path:
    """A LoRA file for the tiny model `tiny` in diffusers' layout (`save_lora_weights` of its pipeline
    class), on its denoiser's attention projections and, with `text`, on the CLIP text encoders the
    pipeline's loader takes."""
    family = FAMILY_OF[tiny]
    parts = (TINY_BUILDERS | TINY_FLOW_BUILDERS)[tiny]()
    cls = getattr(diffusers, family.pipeline)
    denoiser = "unet" if "unet" in parts else "transformer"  # CogVideoX: a transformer on a DDPM grid
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers = {f"{denoiser}_lora_layers": _lora_state(parts[denoiser], DENOISER_TARGETS, rank)}
        for name in ("text_encoder", "text_encoder_2"):
            clip = type(parts.get(name)).__name__.startswith("CLIP")
            if text and clip and name in cls._lora_loadable_modules:
                layers[f"{name}_lora_layers"] = _lora_state(parts[name], TEXT_TARGETS, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    cls.save_lora_weights(path.parent, weight_name=path.name, **layers)
    return path


KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}


def to_kohya(path: Path, out: Path) -> Path:
    """An SD 1.x LoRA of diffusers' layout in Kohya's (sd-scripts): `lora_unet_` / `lora_te_` + the
    module path with underscores, lora_down / lora_up, and an alpha (= the rank: scale 1) per module."""
    kohya = {}
    for key, tensor in load_file(path).items():
        component, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        name = KOHYA_PREFIX[component] + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor
        if kind.startswith("A"):
            kohya[f"{name}.alpha"] = torch.tensor(float(tensor.shape[0]))
    save_file(kohya, out)
    return out


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict:
    """(tiny, "a" | "b") -> a LoRA file of that family (a: denoiser + text encoders, b: denoiser only,
    another seed); ("tiny", "kohya"): a in Kohya's layout."""
    root = tmp_path_factory.mktemp("loras")
    files = {}
    for tiny in TINIES:
        files[tiny, "a"] = write_lora(root / tiny / "a.safetensors", tiny, seed=1, text=True)
        files[tiny, "b"] = write_lora(root / tiny / "b.safetensors", tiny, seed=2)
    files["tiny", "kohya"] = to_kohya(files["tiny", "a"], root / "tiny" / "a_kohya.safetensors")
    return files


# --- running a model: diffusers' own pipeline call ------------------------------------------------


def reference_pipeline(tiny: str):
    """diffusers' pipeline of the tiny model, built from fresh components (no vidinv loading)."""
    if tiny in TINY_FLOW_BUILDERS:
        return tiny_flow_pipeline(tiny)
    cls = getattr(diffusers, TINY_PIPELINES[tiny])
    sd = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return cls(**TINY_BUILDERS[tiny](), **({} if "XL" in cls.__name__ else sd))


@torch.no_grad()
def latents(pipe, tiny: str) -> torch.Tensor:
    """Two steps of the pipeline's own call, prompt encoding (text encoders) and denoiser included."""
    pipe.set_progress_bar_config(disable=True)
    options = dict(num_inference_steps=2, output_type="latent", height=64, width=64)
    if tiny in ("tiny-flux", *VIDEO):
        options["max_sequence_length"] = T5_TOKENS
    if tiny in VIDEO:
        options["num_frames"] = 5
    if tiny == "tiny-hunyuan":  # the tiny tokenizer's template (vidinv.models.flow_adapters.hunyuan_template)
        options["prompt_template"] = TINY_HUNYUAN_TEMPLATE
    out = pipe("a cat on a bike", generator=torch.Generator().manual_seed(0), **options)
    return out.frames if tiny in VIDEO else out.images


def vidinv_latents(tiny: str, lora=None, fuse: bool = True) -> torch.Tensor:
    """`latents` of the model vidinv loads with `model.lora` (the pipeline around its own modules)."""
    models = load_models(tiny, dtype="fp32", device="cpu", lora=lora, lora_fuse=fuse)
    return latents(lora_pipeline(models), tiny)


def diffusers_latents(tiny: str, paths: list[Path], scales: list[float], fuse: bool) -> torch.Tensor:
    """`latents` of diffusers' pipeline with the LoRAs loaded by diffusers itself, as its docs do:
    `load_lora_weights` + `set_adapters`, then (fused) `fuse_lora` + `unload_lora_weights`."""
    pipe = reference_pipeline(tiny)
    names = [f"ref{i}" for i in range(len(paths))]
    for path, name in zip(paths, names):
        pipe.load_lora_weights(str(path), adapter_name=name)
    pipe.set_adapters(names, scales)
    if fuse:
        components = [c for c in pipe._lora_loadable_modules if getattr(pipe, c, None) is not None]
        pipe.fuse_lora(components=components, adapter_names=names)
        pipe.unload_lora_weights()
    return latents(pipe, tiny)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --- the config ------------------------------------------------------------------------------------


def test_one_path_a_mapping_or_a_list(loras):
    a, b = str(loras["tiny", "a"]), str(loras["tiny", "b"])
    for value, want in [
        (a, [(a, 1.0, "lora_0")]),
        ({"path": a, "scale": 0.5}, [(a, 0.5, "lora_0")]),
        ([a, {"path": b, "scale": -1, "name": "style"}], [(a, 1.0, "lora_0"), (b, -1.0, "style")]),
    ]:
        config = config_from_dict({"model": {"lora": value}})
        from vidinv.config import lora_specs

        assert [(s.path, s.scale, s.name) for s in lora_specs(config.model.lora)] == want
    assert load_config(None, [f"model.lora=[{{path: {a}, scale: 0.25}}]"]).model.lora == [{"path": a, "scale": 0.25}]
    assert config_from_dict({}).model.lora is None and config_from_dict({}).model.lora_fuse is True


@pytest.mark.parametrize(
    ("value", "key", "words"),
    [
        ("missing.safetensors", "model.lora.path", "does not exist"),
        ({"path": "A", "scale": float("nan")}, "model.lora.scale", "a finite number"),
        ({"path": "A", "scale": "high"}, "model.lora.scale", "a finite number"),
        ({"path": "A", "scale": True}, "model.lora.scale", "a finite number"),
        ({"path": "A", "weight": 1}, "model.lora", "only the keys path, scale, name"),
        (["A", {"path": "A", "name": "lora_0"}], "model.lora", "a different name"),
        ("tests/conftest.py", "model.lora.path", "a .safetensors file"),
        (3, "model.lora", ".safetensors path or"),
    ],
)
def test_bad_entries_are_one_line_errors(loras, value, key, words):
    a = str(loras["tiny", "a"])

    def fill(v):  # "A": an existing LoRA file
        if isinstance(v, list):
            return [fill(x) for x in v]
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return a if v == "A" else v

    value = fill(value)
    with pytest.raises(VidinvError) as err:
        config_from_dict({"model": {"lora": value}})
    message = str(err.value)
    assert "\n" not in message and f"'{key}'" in message and words in message, message


def test_a_missing_file_stops_the_command_line_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["--quiet", "edit", "configs/tiny/sd15_edit.yaml", f"runtime.output_dir={out}", "model.lora=no.safetensors"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "model.lora.path" in err and "does not exist" in err
    assert not out.exists()


# --- which family a file is for ---------------------------------------------------------------------


def test_the_files_keys_name_their_family(loras):
    want = {
        "tiny": {"sd1", "sd2", "sdxl"},  # its keys are UNet keys: SD 1.x, 2.x and SDXL share them
        "tiny-sdxl": {"sdxl"},  # text_encoder_2 keys: SDXL's
        "tiny-sd3": {"sd3"},  # text_encoder_2 keys beside the joint blocks: SD3's
        "tiny-flux": {"flux"},  # single_transformer_blocks: Flux's
        "tiny-wan": {"wan", "wan22"},  # Wan 2.1 and 2.2 name their blocks alike
        "tiny-hunyuan": {"flux", "hunyuan"},  # transformer keys only (its loader's): Flux's block names
    }
    for tiny, names in want.items():
        assert {f.name for f in lora_families(lora_keys(loras[tiny, "a"]))[0]} == names, tiny
    # transformer.transformer_blocks.N.attn* keys alone: every family whose diffusers blocks are named so
    # (SD3, Flux and the video DiTs after them: LTX-Video, ...); only the widths tell them apart, at loading
    attention_only = {f.name for f in lora_families(lora_keys(loras["tiny-sd3", "b"]))[0]}
    assert {"sd3", "flux", "ltx"} <= attention_only and "wan" not in attention_only
    assert {f.name for f in lora_families(lora_keys(loras["tiny-ltx", "a"]))[0]} == attention_only
    assert {f.name for f in lora_families(lora_keys(loras["tiny", "kohya"]))[0]} == {"sd1", "sd2", "sdxl"}
    assert lora_families(["some.unknown.key"]) == ([], None)


MISMATCHES = [
    ("tiny", "tiny-flux", "is a LoRA for SD 1.x / SD 2.x / SDXL"),  # from the keys, before loading
    ("tiny-wan", "tiny", "is a LoRA for Wan"),
    ("tiny-flux", "tiny-sd3", "is a LoRA for Flux"),
    ("tiny-sd3", "tiny-wan", "is a LoRA for SD3"),
    ("tiny-sdxl", "tiny", "is a LoRA for SDXL"),
    ("tiny", "tiny-sdxl", "does not fit SDXL"),  # the same key layout: diffusers' size mismatch, at loading
    ("tiny-ltx", "tiny-wan", "is a LoRA for SD3 / Flux / "),  # ... / LTX-Video (its keys: the blocks' names)
    ("tiny-wan", "tiny-ltx", "is a LoRA for Wan"),
]


@pytest.mark.parametrize(("lora_of", "model", "words"), MISMATCHES)
def test_a_lora_for_another_family_is_one_line_at_loading(loras, lora_of, model, words):
    with pytest.raises(VidinvError) as err:
        load_models(model, dtype="fp32", device="cpu", lora=str(loras[lora_of, "a"]))
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.lora: ") and words in message, message
    assert FAMILY_OF[model].display in message  # both families named


def test_sd3_attention_lora_on_flux_fails_in_one_line_at_loading(loras):
    """Attention-only SD3 and Flux LoRAs share key names: the widths tell them apart (diffusers' error)."""
    with pytest.raises(VidinvError) as err:
        load_models("tiny-flux", dtype="fp32", device="cpu", lora=str(loras["tiny-sd3", "b"]))
    message = str(err.value)
    assert "\n" not in message and "size" in message
    assert "(a LoRA for SD3 / Flux / " in message and ") does not fit Flux" in message


def test_plan_and_edit_refuse_another_familys_lora_before_loading(loras, tmp_path, capsys, monkeypatch):
    import vidinv.models.loading as loading

    monkeypatch.setattr(loading, "load_models", lambda *a, **k: pytest.fail("loaded"))
    lora = f"model.lora={loras['tiny-wan', 'a']}"
    assert main(["plan", "configs/tiny/sd15_edit.yaml", lora]) == 2
    assert main(["plan", "configs/tiny/flux_edit.yaml", f"model.lora={loras['tiny', 'a']}"]) == 2
    out = tmp_path / "run"
    assert main(["--quiet", "edit", "configs/tiny/sd15_edit.yaml", f"runtime.output_dir={out}", lora]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all("is a LoRA for" in line for line in lines), lines
    assert not (out / "inversion").exists()


def test_the_api_refuses_before_any_inversion(loras, tmp_path):
    from vidinv import VideoEditor

    editor = VideoEditor.from_pretrained(
        "tiny-flux", model={"device": "cpu", "lora": str(loras["tiny", "a"])}, inversion={"steps": 2}
    )
    with pytest.raises(VidinvError, match="is a LoRA for SD 1.x"):
        editor.invert(moving_square(1, 32), source_prompt="a", record_dir=tmp_path / "record")
    assert not (tmp_path / "record").exists()


def test_a_pipeline_given_to_vidinv_is_not_changed_behind_its_back(loras):
    from vidinv import VideoEditor

    pipe = reference_pipeline("tiny")
    with pytest.raises(VidinvError, match="pipe.load_lora_weights") as err:
        VideoEditor.from_pipe(pipe, model={"lora": str(loras["tiny", "a"])})
    assert "\n" not in str(err.value)


# --- what a LoRA does -------------------------------------------------------------------------------


@pytest.mark.parametrize("tiny", LANED)
def test_scale_zero_is_no_lora_and_scale_one_changes_the_output(loras, tiny):
    base = vidinv_latents(tiny)
    for fuse in (True, False):
        zero = vidinv_latents(tiny, {"path": str(loras[tiny, "a"]), "scale": 0}, fuse)
        assert torch.equal(zero, base), (tiny, fuse)
        one = vidinv_latents(tiny, str(loras[tiny, "a"]), fuse)
        assert relative(one, base) > 1e-3, (tiny, fuse)


@pytest.mark.parametrize("tiny", LANED)
def test_equal_to_diffusers_own_pipeline_with_the_lora(loras, tiny):
    """vidinv's loading (denoiser and text encoders) equals diffusers' pipeline loading the same file,
    fused and unfused, bit for bit; fused and unfused agree within FUSE_RTOL."""
    path = loras[tiny, "a"]
    got = {fuse: vidinv_latents(tiny, {"path": str(path), "scale": 0.7}, fuse) for fuse in (True, False)}
    for fuse in (True, False):
        assert torch.equal(got[fuse], diffusers_latents(tiny, [path], [0.7], fuse)), (tiny, fuse)
    assert relative(got[True], got[False]) < FUSE_RTOL


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # diffusers' reference: two adapters
@pytest.mark.parametrize("tiny", ["tiny", "tiny-flux"])
def test_two_loras_compose(loras, tiny):
    a, b = loras[tiny, "a"], loras[tiny, "b"]
    both = [{"path": str(a), "scale": 0.5}, {"path": str(b), "scale": 0.8, "name": "detail"}]
    got = {fuse: vidinv_latents(tiny, both, fuse) for fuse in (True, False)}
    for fuse in (True, False):
        assert torch.equal(got[fuse], diffusers_latents(tiny, [a, b], [0.5, 0.8], fuse)), fuse
    assert relative(got[True], got[False]) < FUSE_RTOL
    for alone in (vidinv_latents(tiny, both[:1]), vidinv_latents(tiny, both[1:])):
        assert relative(got[True], alone) > 1e-3


def test_kohya_layout_equals_diffusers_layout(loras):
    for fuse in (True, False):
        kohya = vidinv_latents("tiny", str(loras["tiny", "kohya"]), fuse)
        assert torch.equal(kohya, vidinv_latents("tiny", str(loras["tiny", "a"]), fuse)), fuse


@pytest.mark.parametrize("tiny", ["tiny", "tiny-sdxl"])
def test_text_encoder_loras_change_vidinv_prompt_embeddings(loras, tiny):
    """vidinv's own prompt encoding (both SDXL encoders) reads the LoRA'd text encoders; a
    denoiser-only LoRA leaves the embeddings as they were."""
    from vidinv.models.text import encode_text

    def text(lora=None):
        models = load_models(tiny, dtype="fp32", device="cpu", lora=lora)
        with torch.no_grad():
            cond = encode_text(models, ["a cat"])
        return [cond.emb, *(cond.added or {}).values()]

    base, with_text, denoiser_only = text(), text(str(loras[tiny, "a"])), text(str(loras[tiny, "b"]))
    assert not torch.equal(with_text[0], base[0])
    if tiny == "tiny-sdxl":  # the pooled embedding comes from text_encoder_2 alone
        assert not torch.equal(with_text[1], base[1])
    assert all(torch.equal(x, y) for x, y in zip(denoiser_only, base))


def test_fused_layers_are_plain_modules_unfused_are_peft_layers(loras):
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = sum(k.endswith("lora_A.weight") for k in lora_keys(loras["tiny", "b"]))
    for fuse in (True, False):
        models = load_models("tiny", dtype="fp32", device="cpu", lora=str(loras["tiny", "b"]), lora_fuse=fuse)
        layers = sum(isinstance(m, BaseTunerLayer) for m in models.unet.modules())
        assert layers == (0 if fuse else targets) and models.loras[0]["fused"] is fuse


# --- the record and the plan -------------------------------------------------------------------------


def test_a_record_made_without_the_loras_is_not_reused_with_them(loras, tmp_path):
    from vidinv import VideoEditor

    clip, record = moving_square(2, 32), tmp_path / "record"

    def invert(lora=None):
        model = {"device": "cpu", "dtype": "fp32", **({"lora": lora} if lora else {})}
        editor = VideoEditor.from_pretrained("tiny", model=model, inversion={"steps": 2})
        return editor.invert(clip, source_prompt="a square", record_dir=record)

    a = str(loras["tiny", "a"])
    plain, reused = invert()
    assert not reused
    with_lora, reused = invert(a)
    assert not reused and with_lora.fingerprint != plain.fingerprint
    assert invert(a)[1]  # the same file and scale: reused
    assert not invert({"path": a, "scale": 0.5})[1]  # another scale
    assert not invert([a, str(loras["tiny", "b"])])[1]  # another LoRA beside it
    assert not invert()[1]  # none again


def test_the_fingerprint_hashes_the_file_once(loras, monkeypatch):
    import vidinv.models.lora as lora

    path = loras["tiny", "b"]
    first = lora.file_sha256(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(lora.hashlib, "sha256", lambda: pytest.fail("hashed twice"))
    assert lora.file_sha256(path) == first


def test_plan_counts_unfused_lora_weights(loras):
    from vidinv.planning import plan_run

    path = loras["tiny", "a"]
    tensors = load_file(path)
    want = sum(t.numel() * 4 for k, t in tensors.items() if not k.endswith("alpha"))  # fp32 on the CPU
    config = load_config("configs/tiny/sd15_edit.yaml", [f"model.lora={path}", "model.lora_fuse=false"])
    plain = plan_run(load_config("configs/tiny/sd15_edit.yaml"))
    unfused = plan_run(config)
    assert unfused.weights["lora"] == want and unfused.device_peak == plain.device_peak + want
    fused = plan_run(load_config("configs/tiny/sd15_edit.yaml", [f"model.lora={path}"]))
    assert "lora" not in fused.weights and fused.device_peak == plain.device_peak


# --- files written by `vidinv edit` -------------------------------------------------------------------


def _edit_md5(config: str, out: Path, *extra: str) -> str:
    args = ["--quiet", "edit", config, f"runtime.output_dir={out}", "runtime.codec=ffv1", "inversion.steps=2"]
    assert main([*args, *extra]) == 0
    return hashlib.md5((out / "edited.mkv").read_bytes()).hexdigest()


CONFIGS = {
    "tiny": "configs/tiny/sd15_edit.yaml",
    "tiny-sdxl": "configs/tiny/sdxl_edit.yaml",
    "tiny-sd3": "configs/tiny/sd3_flowedit.yaml",
    "tiny-flux": "configs/tiny/flux_edit.yaml",
    "tiny-wan": "configs/tiny/wan_edit.yaml",
    "tiny-wan22": "configs/tiny/wan22_edit.yaml",
    "tiny-cogvideox": "configs/tiny/cogvideox_edit.yaml",
    "tiny-hunyuan": "configs/tiny/hunyuan_edit.yaml",
    "tiny-ltx": "configs/tiny/ltx_edit.yaml",
}


@pytest.mark.parametrize("tiny", [t if t == "tiny-sd3" else pytest.param(t, marks=pytest.mark.slow) for t in TINIES])
def test_edit_bytes_scale_zero_equal_no_lora_scale_one_differ(loras, tiny, tmp_path):
    config, path = CONFIGS[tiny], loras[tiny, "a"]
    small = ["video.num_frames=2"] if not FAMILY_OF[tiny].video else []
    plain = _edit_md5(config, tmp_path / "plain", *small)
    assert _edit_md5(config, tmp_path / "zero", *small, f"model.lora={{path: {path}, scale: 0}}") == plain
    assert _edit_md5(config, tmp_path / "one", *small, f"model.lora={path}") != plain


def test_a14b_loras_load_into_the_expert_they_name(tmp_path):
    """Wan 2.2 A14B's LoRAs come per expert: `expert: low` loads into the low-noise transformer_2
    (diffusers' load_into_transformer_2), the default into the high-noise transformer; the pair composes,
    the record's fingerprint tells them apart, and a model with one transformer refuses `low` in one line."""
    path = write_lora(tmp_path / "a14b.safetensors", "tiny-wan22-a14b", seed=5)
    load = lambda lora: load_models("tiny-wan22-a14b", dtype="fp32", device="cpu", lora=lora)  # noqa: E731

    def weights(models, name):
        return getattr(models.pipeline, name).state_dict()

    def same(a, b, name):
        return all(torch.equal(weights(a, name)[k], weights(b, name)[k]) for k in weights(b, name))

    base, high = load(None), load(str(path))
    low, both = load({"path": str(path), "expert": "low"}), load([str(path), {"path": str(path), "expert": "low"}])
    assert not same(high, base, "transformer") and same(high, base, "transformer_2")
    assert same(low, base, "transformer") and not same(low, base, "transformer_2")
    assert same(both, high, "transformer") and same(both, low, "transformer_2")
    assert high.loras != low.loras and low.loras[0]["expert"] == "low" and "expert" not in high.loras[0]
    one = write_lora(tmp_path / "ti2v.safetensors", "tiny-wan22", seed=6)
    with pytest.raises(VidinvError, match=r"expert low names the low-noise transformer_2") as err:
        load_models("tiny-wan22", dtype="fp32", device="cpu", lora={"path": str(one), "expert": "low"})
    assert "\n" not in str(err.value)
    with pytest.raises(VidinvError, match=r"model.lora.expert.*high or low"):
        lora_specs({"path": str(path), "expert": "middle"})
