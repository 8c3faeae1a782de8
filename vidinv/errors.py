"""The one error class users see: a one-line message, exit code 2 from the CLI."""

import re


class VidinvError(Exception):
    """A problem with the user's input, config or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


OUT_OF_MEMORY_ADVICE = (
    "lower runtime.unet_chunk or runtime.vae_chunk, set runtime.offload=model or sequential, or use fewer"
    " frames or a smaller size (`vidinv plan` predicts the peak)"
)


def out_of_memory(err: BaseException) -> VidinvError | None:
    """A device or host allocation failure as a one-line VidinvError saying what to lower; None for
    any other error (torch's OutOfMemoryError on CUDA, its CPU allocator's RuntimeError, MemoryError)."""
    import torch

    cpu_allocator = isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    if not (isinstance(err, (torch.OutOfMemoryError, MemoryError)) or cpu_allocator):
        return None
    where = "on the GPU" if isinstance(err, torch.OutOfMemoryError) else "on the host"
    asked = re.search(r"tried to allocate (?:(\d+) bytes|([\d.]+ [KMGT]iB))", str(err))
    size = asked and (_mib_or_gib(int(asked.group(1))) if asked.group(1) else asked.group(2))
    detail = f" (tried to allocate {size})" if asked else ""
    return VidinvError(f"out of memory {where}{detail}: {OUT_OF_MEMORY_ADVICE}")


def _mib_or_gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def check_finite(latents, stage: str, model_dtype=None) -> None:
    """After a stage's loop (one host sync): its latents must be finite. A denoiser that overflows
    (in fp16, `model_dtype`) fills them with inf/NaN, which would otherwise reach the VAE and the
    files as black frames."""
    import torch

    if not bool(torch.isfinite(latents).all()):
        hint = "; model.dtype=bf16 or fp32 avoids fp16's overflow" if model_dtype == torch.float16 else ""
        raise VidinvError(f"the denoiser gave non-finite latents (inf/NaN) in the {stage}{hint}")
