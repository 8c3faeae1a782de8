"""Attention kernels: sdpa equals the naive reference; backend selection."""

from __future__ import annotations

import sys

import pytest
import torch

from vidinv.attention.backends import attention, resolve_backend, xformers_available
from vidinv.errors import VidinvError


@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_equals_naive_in_fp32(with_mask):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 40, 8, generator=g)
    k = torch.randn(3, 2, 120, 8, generator=g)
    v = torch.randn(3, 2, 120, 8, generator=g)
    mask = torch.randn(3, 1, 1, 120, generator=g) if with_mask else None
    a = attention(q, k, v, backend="sdpa", scale=8**-0.5, mask=mask)
    b = attention(q, k, v, backend="naive", scale=8**-0.5, mask=mask)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_naive_keeps_the_input_dtype():
    q = torch.randn(1, 1, 4, 8, dtype=torch.bfloat16)
    assert attention(q, q, q, backend="naive", scale=0.3).dtype == torch.bfloat16


def test_auto_is_sdpa_on_cpu():
    assert resolve_backend("auto", "cpu") == "sdpa"


def test_unknown_backend_is_a_user_error():
    with pytest.raises(VidinvError, match="model.attention"):
        resolve_backend("flash", "cpu")


def test_xformers_needs_xformers_and_cuda():
    with pytest.raises(VidinvError, match="xformers"):
        resolve_backend("xformers", "cpu")


@pytest.mark.skipif(not (xformers_available() and torch.cuda.is_available()), reason="needs xformers and CUDA")
def test_xformers_equals_naive_on_cuda():
    q, k, v = torch.randn(3, 2, 2, 64, 8, device="cuda", dtype=torch.float16).unbind(0)
    a = attention(q, k, v, backend="xformers", scale=8**-0.5)
    b = attention(q, k, v, backend="naive", scale=8**-0.5)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


@pytest.fixture
def broken_xformers(tmp_path, monkeypatch):
    """An installed xformers whose kernels do not run here (as a wheel built for another torch: it
    imports, then its first call raises NotImplementedError), on a machine reporting CUDA."""
    from vidinv import info

    package = tmp_path / "xformers"
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ops" / "__init__.py").write_text(
        "def memory_efficient_attention(*args, **kwargs):\n"
        "    raise NotImplementedError('No operator found for `memory_efficient_attention_forward`')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    info.xformers_problem.cache_clear()
    yield
    info.xformers_problem.cache_clear()
    for name in [name for name in sys.modules if name.split(".")[0] == "xformers"]:
        del sys.modules[name]  # the fake package goes with its folder


def test_an_installed_xformers_that_does_not_run_is_not_picked_and_named_in_one_line(broken_xformers, caplog):
    from vidinv.info import available_attention_backends

    assert xformers_available()  # importable: what the old find_spec check went by
    assert resolve_backend("auto", "cuda") == "sdpa"
    assert "attention runs on torch SDPA" in caplog.text and "xformers does not run here" in caplog.text
    with pytest.raises(VidinvError, match=r"^model.attention: 'xformers' asked for, but xformers does not run here"):
        resolve_backend("xformers", "cuda")
    assert "xformers" not in available_attention_backends()
