"""Model families as traits: one record per family (SD 1.x, SD 2.x, SDXL, SD3, Flux, Wan 2.1).

    family = FAMILIES["flux"]
    family.guidance_embedded, family.t5_tokens, family.flowedit.target_guidance   # True, 512, 5.5

A `Family` holds what the code does differently per family and what does not depend on the
checkpoint: its diffusers classes, text encoders, how its latents are normalised and patched, its
scheduler grid and shift rule, guidance style, text-token layout, FlowEdit's defaults, the
frame-count rule, the joint-attention layout, PnP's / FateZero's default layers, and for flow
families the adapter that calls the transformer and encodes prompts (`vidinv.models.flow_adapters`).
The numbers a checkpoint holds (latent channels, scaling and shift factors, patch size, the
scheduler's shift, the temporal factor of a causal VAE) are read from its configs by the rule the
record names. A loaded model's family is its record (`PipelineModels.family`) or the record with the
checkpoint's prediction type and size (`vidinv.models.family.ModelFamily`, `Models.family`).

Adding a family: its record here, its tiny model (`vidinv.models.tiny_configs` and its builder in
`vidinv.models.tiny` / `vidinv.models.tiny_flow`, `configs/tiny/*.yaml`) and its tests; an adapter
only for a new calling convention. Code outside `vidinv.models` reads traits, never family names
(tests/test_family_traits.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from vidinv.models.cogvideox import COGVIDEOX_ADAPTER
from vidinv.models.flow_adapters import (
    FLUX_ADAPTER,
    HUNYUAN_ADAPTER,
    LTX_ADAPTER,
    SD3_ADAPTER,
    WAN_ADAPTER,
    FlowAdapter,
)


@dataclass(frozen=True)
class FlowEditDefaults:
    """FlowEdit's defaults on a family (`edit.flowedit.*` left null), the paper's (Kulikov et al.
    2024) settings: SD3's are these, Flux's are its own."""

    n_max_fraction: float = 33 / 50  # edited steps, a fraction of inversion.steps (SD3: 33 of 50)
    source_guidance: float = 3.5  # CFG scale (SD3, Wan) or embedded guidance (Flux) of the source
    target_guidance: float = 13.5  # the same of the target


@dataclass(frozen=True)
class Family:
    """What vidinv knows about a model family, whatever the checkpoint (module docstring)."""

    name: str  # sd1 | sd2 | sdxl | sd3 | flux | wan: `vidinv info`'s family row
    display: str  # in messages: SD 1.x, SD 2.x, SDXL, SD3, Flux, Wan
    pipeline: str  # the diffusers pipeline class (model_index.json's _class_name)
    denoiser: str  # the diffusers class of the denoiser: a UNet or a transformer
    vae: str  # the diffusers VAE class
    text_encoders: tuple[str, ...]  # transformers classes, in the pipeline's order
    tiny: str  # the built-in tiny random-weight model of the family
    default_size: tuple[int, int]  # (height, width) its pipeline makes when its configs do not say
    published: str | None = None  # hub id of the published model (named in hints)
    single_file_types: tuple[str, ...] = ()  # diffusers' `infer_diffusers_model_type` of its single files
    flow: bool = False  # rectified flow (velocity on FlowMatchEuler's sigma grid), else DDPM (DDIM grid)
    shift: str = "none"  # the flow grid's shift: none | static (the scheduler's `shift`) | dynamic
    # (Flux: mu from the image tokens, LTX-Video: from the latent clip's; `sequence_length`) | flow_shift
    # (Wan: UniPC's `flow_shift`, stepped by Euler)
    linspace_sigmas: bool = False  # the pipeline passes sigmas linspace(1, 1/N, N) through the
    # scheduler's static shift (HunyuanVideo), not `set_timesteps(N)` (SD3, Wan); Flux's dynamic shift does too
    latents: str = "scale"  # the VAE's latent normalisation, factors from its config: scale (x s) |
    # shift_scale ((x - shift_factor) x scaling_factor) | mean_std (per channel latents_mean / latents_std:
    # Wan's config's; LTX-Video's VAE buffers, and its scaling_factor)
    packing: int | None = None  # latent pixels a side a token packs: Flux's pipeline 2; None: the
    # transformer config's patch_size (SD3, Wan; 1 for UNets, which take latent pixels)
    frames: str = "any"  # frame-count rule: any (a per-frame VAE) | causal (1 + k x the causal VAE's
    # temporal factor, Wan's 4: 1 + 4k frames)
    video: bool = False  # a native video model: the transformer sees the whole latent clip (b f c h w)
    native_latent_frames: int | None = None  # a video model's native window (Wan: 21 latent frames = 81
    # frames): runtime.window's default (`vidinv.attention.windows`); None: a frame model (no windows)
    half: str = "fp16"  # model.dtype auto on CUDA: the precision it is published in (fp16 | bf16)
    vae_fp32: bool = False  # the VAE stays in fp32 whatever model.dtype (Wan's causal VAE)
    reads_force_upcast: bool = False  # a VAE whose config says force_upcast stays in fp32 (SDXL's pipeline)
    reads_force_zeros: bool = False  # model_index's force_zeros_for_empty_prompt: the empty negative
    # prompt's row is zeros (SDXL's pipeline; true when the index does not say)
    t5_tokens: int = 0  # the pipeline's T5 max_sequence_length (0: no T5)
    t5_optional: bool = False  # loads without its T5 encoder (SD3: `model.t5: false`)
    extra_text_tokens: int = 0  # text tokens before T5's in the sequence (SD3: CLIP's 77)
    t5_tokenizer: str = "tokenizer"  # the pipeline's attribute of the T5 tokenizer (Flux tokenizer_2, SD3 tokenizer_3)
    guidance_embedded: bool = False  # guidance-distilled (Flux): one row a prompt, the scale an input
    flowedit: FlowEditDefaults | None = None  # FlowEdit's defaults (flow families)
    joint_attention: str | None = None  # token order of joint attention: image_text (SD3) |
    # text_image (Flux); None: cross-attention to the text (UNets, Wan)
    adapter: FlowAdapter | None = None  # how the transformer is called and prompts encoded (flow)
    feature_layers: tuple[str, ...] = ()  # PnP/TokenFlow residual blocks (the decoder's 1/4 level)
    store_min_level: int = 1  # FateZero: attention maps from this resolution level down (0 = full)
    # model.lora (vidinv.models.lora): regexes of the LoRA keys that name this family's layers, in the
    # layouts diffusers reads (its own, Kohya's, the original checkpoints'); a file whose keys name
    # another family's layers only is refused before loading
    lora_keys: tuple[str, ...] = ()
    # the diffusers pipeline class whose `load_lora_weights` applies model.lora; None: `pipeline` (every
    # family's pipeline has a loader of its own: HunyuanVideoPipeline's and LTXPipeline's read diffusers'
    # and their trainers' layouts). The hook for a family whose pipeline has none
    lora_loader: str | None = None
    # further built-in tiny models of the family's other published layouts (Wan 2.2's two-expert A14B)
    tiny_variants: tuple[str, ...] = ()
    # model_index.json keys whose value (set, not null / false) marks this family among those sharing
    # its pipeline class (Wan 2.2: a second expert, its boundary, per-token timesteps); a family
    # without marks is its pipeline's default (Wan 2.1)
    index_marks: tuple[str, ...] = ()

    @property
    def tiny_names(self) -> tuple[str, ...]:
        """The family's built-in tiny models: `tiny` and its variants."""
        return (self.tiny, *self.tiny_variants)

    @property
    def traits(self) -> Family:
        """The family's record (itself; a `ModelFamily`'s is its family's)."""
        return FAMILIES[self.name]

    @property
    def flowedit_defaults(self) -> FlowEditDefaults:
        return self.flowedit or FlowEditDefaults()

    def text_tokens(self, t5_tokens: int) -> int:
        """Length of the text sequence with `t5_tokens` T5 tokens (SD3: CLIP's 77 before them)."""
        return t5_tokens + self.extra_text_tokens

    def patch_pixels(self, transformer_config: dict, factor: int) -> int:
        """Pixels a side of one token: the VAE factor times the latent patch (the family's packing or
        the transformer config's patch_size, its spatial one for Wan's (t, h, w))."""
        patch = self.packing if self.packing is not None else transformer_config.get("patch_size", 2)
        patch = patch[-1] if isinstance(patch, (list, tuple)) else patch
        return factor * int(patch or 1)

    def sequence_length(self, transformer_config: dict, latent_shape) -> int:
        """Tokens the transformer sees for latents (..., f, c, h, w), from which a dynamic shift's mu is
        computed as the pipeline does: one frame's (Flux: 2x2 packed), or for a video model the whole
        clip's (LTX-Video: f x h x w in its patches of patch_size_t x patch_size^2)."""
        f, _, h, w = latent_shape[-4:] if len(latent_shape) >= 4 else (1, *latent_shape[-3:])
        patch = self.packing if self.packing is not None else transformer_config.get("patch_size", 2)
        temporal = transformer_config.get("patch_size_t", 1)
        if isinstance(patch, (list, tuple)):  # Wan's (t, h, w)
            temporal, patch = patch[0], patch[-1]
        frames = f // int(temporal or 1) if self.video else 1
        return frames * (h // int(patch or 1)) * (w // int(patch or 1))

    def attention_layers(self, self_layers) -> list[str]:
        """PnP/TokenFlow's default self-attention layers. UNets: every decoder self-attention layer but
        those of the first decoder attention module (SD 1.5: up_blocks.1.attentions.0; SDXL:
        up_blocks.0.attentions.0, all ten transformer blocks). Transformers (flow, CogVideoX): the later half of
        the attention layers (their image q, k; as PnP injects in the UNet's decoder)."""
        if self.adapter is not None:  # a transformer (flow, CogVideoX)
            return list(self_layers[len(self_layers) // 2 :])
        decoder = [name for name in self_layers if name.startswith("up_blocks.")]
        if not decoder:
            return []
        first = ".".join(decoder[0].split(".")[:4]) + "."
        return [name for name in decoder if not name.startswith(first)]

    def store_layers(self, unet) -> list[str]:
        """FateZero's default attention layers: those at or below the family's store level
        (SD: below the full latent resolution; SDXL: the 32x32 level at 1024 px)."""
        names = [name.rsplit(".", 1)[0] for name in unet.attn_processors]
        levels = len(unet.down_blocks)
        return [n for n in names if _level(n, levels) >= self.store_min_level]


def _level(layer: str, levels: int) -> int:
    """Resolution level of a UNet layer: 0 = full latent resolution, levels - 1 = the mid block."""
    part, _, rest = layer.partition(".")
    if part == "mid_block":
        return levels - 1
    index = int(rest.split(".", 1)[0])
    return index if part == "down_blocks" else levels - 1 - index


CLIP = ("CLIPTextModel",)
# LoRA key layouts (Family.lora_keys): diffusers' component prefixes, Kohya's lora_unet_ / lora_te(1|2)_,
# the original checkpoints' block names (SD3's joint_blocks, Flux's double / single blocks, Wan's blocks)
TEXT_LORA = (r"^text_encoder\.", r"^lora_te1?_")
TEXT_2_LORA = (r"^text_encoder_2\.", r"^lora_te2_")
UNET_LORA = (r"^unet\.", r"^lora_unet_(down|mid|up|input|middle|output)_", r"^(down|mid|up)_blocks?\.", *TEXT_LORA)
SD3_LORA = (r"^transformer\.transformer_blocks\.", r"joint_blocks", *TEXT_LORA, *TEXT_2_LORA)
FLUX_LORA = (r"^transformer\.(single_)?transformer_blocks\.", r"(single|double)_blocks", *TEXT_LORA)
WAN_LORA = (r"^(transformer\.|diffusion_model\.)?blocks\.\d", r"^lora_unet_blocks_\d")
# LTX-Video: its loader takes the transformer only; diffusers' block names are SD3's / Flux's, the original
# (LTX-Video trainer's) diffusion_model.transformer_blocks too
LTX_LORA = (r"^(transformer|diffusion_model)\.transformer_blocks\.\d",)
# HunyuanVideo: its loader takes the transformer only; diffusers' block names are Flux's, the original
# double / single blocks too (only the widths tell them apart, at loading)
HUNYUAN_LORA = (r"^transformer\.(single_)?transformer_blocks\.", r"(single|double)_blocks")
SD_UNET = {"denoiser": "UNet2DConditionModel", "vae": "AutoencoderKL"}
SD1 = Family(
    "sd1", "SD 1.x", "StableDiffusionPipeline", **SD_UNET, text_encoders=CLIP, tiny="tiny",
    default_size=(512, 512), published="stable-diffusion-v1-5/stable-diffusion-v1-5", single_file_types=("v1",),
    feature_layers=("up_blocks.1.resnets.1",), lora_keys=UNET_LORA,
)  # fmt: skip
SD2 = Family(
    "sd2", "SD 2.x", "StableDiffusionPipeline", **SD_UNET, text_encoders=CLIP, tiny="tiny-sd2",
    default_size=(768, 768), published="stabilityai/stable-diffusion-2-1", single_file_types=("v2",),
    feature_layers=("up_blocks.1.resnets.1",), lora_keys=UNET_LORA,
)  # fmt: skip
# SDXL's decoder has three levels (32, 64, 128 latent px at 1024): up_blocks.0 is the 1/4 level SD
# 1.5's up_blocks.1 is; FateZero keeps maps of at most 32x32 (as in SD 1.5 at 512), level 2.
SDXL = Family(
    "sdxl", "SDXL", "StableDiffusionXLPipeline", **SD_UNET, text_encoders=("CLIPTextModel", "CLIPTextModelWithProjection"),
    tiny="tiny-sdxl", default_size=(1024, 1024), published="stabilityai/stable-diffusion-xl-base-1.0",
    single_file_types=("xl_base",), reads_force_upcast=True, reads_force_zeros=True,
    feature_layers=("up_blocks.0.resnets.1",), store_min_level=2, lora_keys=UNET_LORA + TEXT_2_LORA,
)  # fmt: skip
SD3 = Family(
    "sd3", "SD3", "StableDiffusion3Pipeline", "SD3Transformer2DModel", "AutoencoderKL",
    text_encoders=("CLIPTextModelWithProjection", "CLIPTextModelWithProjection", "T5EncoderModel"), tiny="tiny-sd3",
    default_size=(1024, 1024), published="stabilityai/stable-diffusion-3-medium-diffusers",
    single_file_types=("sd3", "sd35_medium", "sd35_large"), flow=True, shift="static", latents="shift_scale",
    t5_tokens=256, t5_optional=True, extra_text_tokens=77, t5_tokenizer="tokenizer_3", flowedit=FlowEditDefaults(),
    joint_attention="image_text", adapter=SD3_ADAPTER, lora_keys=SD3_LORA,
)  # fmt: skip
FLUX = Family(
    "flux", "Flux", "FluxPipeline", "FluxTransformer2DModel", "AutoencoderKL",
    text_encoders=("CLIPTextModel", "T5EncoderModel"), tiny="tiny-flux", default_size=(1024, 1024),
    published="black-forest-labs/FLUX.1-dev", single_file_types=("flux-dev", "flux-schnell"), flow=True,
    shift="dynamic", latents="shift_scale", packing=2, half="bf16", t5_tokens=512, t5_tokenizer="tokenizer_2",
    guidance_embedded=True,
    flowedit=FlowEditDefaults(24 / 28, 1.5, 5.5), joint_attention="text_image", adapter=FLUX_ADAPTER,
    lora_keys=FLUX_LORA,
)  # fmt: skip
# Wan (not in the FlowEdit paper): SD3's n_max fraction and source guidance, WanPipeline's 5.0 the target's
WAN = Family(
    "wan", "Wan", "WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan", text_encoders=("UMT5EncoderModel",),
    tiny="tiny-wan", default_size=(480, 832), published="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", flow=True,
    shift="flow_shift", latents="mean_std", frames="causal", video=True, native_latent_frames=21, half="bf16",
    vae_fp32=True, t5_tokens=512, flowedit=FlowEditDefaults(33 / 50, 3.5, 5.0), adapter=WAN_ADAPTER,
    lora_keys=WAN_LORA,
)  # fmt: skip
# Wan 2.2 (WanPipeline too): the TI2V-5B layout (a patchified 48-channel VAE, 16x in space, and
# per-token timesteps; 121 frames = 31 latent frames at 704x1280) and the A14B layout (two experts:
# the high-noise transformer above the boundary timestep, transformer_2 below it). Which one a
# checkpoint is, and its boundary, are read from its model_index.json (vidinv.models.flow).
WAN22 = Family(
    "wan22", "Wan 2.2", "WanPipeline", "WanTransformer3DModel", "AutoencoderKLWan", text_encoders=("UMT5EncoderModel",),
    tiny="tiny-wan22", tiny_variants=("tiny-wan22-a14b",), default_size=(704, 1280),
    published="Wan-AI/Wan2.2-TI2V-5B-Diffusers", flow=True, shift="flow_shift", latents="mean_std", frames="causal",
    video=True, native_latent_frames=31, half="bf16", vae_fp32=True, t5_tokens=512,
    flowedit=FlowEditDefaults(33 / 50, 3.5, 5.0), adapter=WAN_ADAPTER, lora_keys=WAN_LORA,
    index_marks=("transformer_2", "boundary_ratio", "expand_timesteps"),
)  # fmt: skip
# LTX-Video 0.9 (not in the FlowEdit paper): SD3's n_max fraction, LTXPipeline's guidance 3.0 the target's,
# a source half of it (as Flux's 1.5 is of 5.5 embedded, ~3 real); mu from the latent clip's tokens
LTX = Family(
    "ltx", "LTX-Video", "LTXPipeline", "LTXVideoTransformer3DModel", "AutoencoderKLLTXVideo",
    text_encoders=("T5EncoderModel",), tiny="tiny-ltx", default_size=(512, 704), published="Lightricks/LTX-Video",
    single_file_types=("ltx-video", "ltx-video-0.9.1", "ltx-video-0.9.5", "ltx-video-0.9.7"), flow=True,
    shift="dynamic", latents="mean_std", frames="causal", video=True, native_latent_frames=21, half="bf16",
    t5_tokens=128, flowedit=FlowEditDefaults(33 / 50, 1.5, 3.0), adapter=LTX_ADAPTER, lora_keys=LTX_LORA,
)  # fmt: skip

# HunyuanVideo (not in the FlowEdit paper): SD3's n_max fraction, the source guidance of Flux (the other
# guidance-distilled family), HunyuanVideoPipeline's 6.0 the target's; sigmas linspace(1, 1/N, N) shifted
# by the scheduler's shift (7.0 published); its VAE runs in the model's dtype, as diffusers' example loads it
HUNYUAN = Family(
    "hunyuan", "HunyuanVideo", "HunyuanVideoPipeline", "HunyuanVideoTransformer3DModel", "AutoencoderKLHunyuanVideo",
    text_encoders=("LlamaModel", "CLIPTextModel"), tiny="tiny-hunyuan", default_size=(720, 1280),
    published="hunyuanvideo-community/HunyuanVideo", flow=True, shift="static", linspace_sigmas=True,
    frames="causal", video=True, native_latent_frames=33, half="bf16", t5_tokens=256, guidance_embedded=True,
    flowedit=FlowEditDefaults(33 / 50, 1.5, 6.0), adapter=HUNYUAN_ADAPTER, lora_keys=HUNYUAN_LORA,
)  # fmt: skip
# CogVideoX (1.0: 2B, 5B): a DDPM video DiT (v-prediction on CogVideoXDDIMScheduler's zero-terminal-SNR
# grid), so the DDPM-grid inversions (ddim, freeinv, mbdi, ddpm_ef) run on it, called through its adapter
COGVIDEOX = Family(
    "cogvideox", "CogVideoX", "CogVideoXPipeline", "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX",
    text_encoders=("T5EncoderModel",), tiny="tiny-cogvideox", default_size=(480, 720), published="THUDM/CogVideoX-2b",
    frames="causal", video=True, native_latent_frames=13, t5_tokens=226, joint_attention="text_image",
    adapter=COGVIDEOX_ADAPTER,
    lora_keys=(r"^(transformer\.)?transformer_blocks\.\d",),
)  # fmt: skip

FAMILIES: dict[str, Family] = {
    family.name: family for family in (SD1, SD2, SDXL, SD3, FLUX, WAN, WAN22, HUNYUAN, LTX, COGVIDEOX)
}


def family_record(family: Family | str) -> Family:
    """The record of a family or of its name (KeyError for unknown names)."""
    return family if isinstance(family, Family) else FAMILIES[family]


def families_where(**traits) -> list[Family]:
    """The families whose traits equal these, e.g. `families_where(flow=True)`."""
    return [f for f in FAMILIES.values() if all(getattr(f, key) == value for key, value in traits.items())]
