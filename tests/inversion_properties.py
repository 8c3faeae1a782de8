"""Properties every flow family's tests check alike, written once (tests/test_wan22.py, test_ltx.py,
test_hunyuan.py, test_flow_inversion_models.py)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from vidinv.inversion import invert, reconstruct


def assert_freeinv_without_transforms_is_flow(models, x0: torch.Tensor, config_of) -> None:
    """FreeInv with `transforms: none` inverts and reconstructs as flow inversion, bit for bit
    (`config_of(method)`: the config of each run, transforms none)."""
    runs = {}
    for method in ("flow", "freeinv"):
        config = config_of(method)
        runs[method] = invert(models, x0, config)
        runs[method + "_out"] = reconstruct(models, runs[method], config)
    assert torch.equal(runs["flow"].latents, runs["freeinv"].latents)
    assert torch.equal(runs["flow_out"], runs["freeinv_out"])


@contextmanager
def transformer_inputs(*transformers):
    """The keyword inputs of every call of these transformers inside the block, in order, as
    (index of the transformer, {name: a clone of the tensor})."""
    seen, hooks = [], []
    for k, model in enumerate(transformers):

        def hook(module, args, kwargs, k=k):
            seen.append((k, {n: v.clone() for n, v in kwargs.items() if isinstance(v, torch.Tensor)}))

        hooks.append(model.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield seen
    finally:
        for handle in hooks:
            handle.remove()
