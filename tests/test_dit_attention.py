"""Attention backends: the split kernel against a plain float64 computation, ``auto``'s choice, and every CPU backend
in the whole DiT against the official forward.

Oracles: softmax(q kᵀ / √D) v written out in float64 (kernel level); the official ``wan22`` WanModel in float32
(model level, as tests/test_dit_parity.py). Tolerances: float32 max|ours - ref| <= 1e-4 * max|ref| + 1e-5 (the
project's parity bar); bf16 inputs: max error <= 4 bf16 ulps of the output's scale (kernel) and <= 3e-2 of the
output's scale (whole model, the bar of the bf16 test in test_dit_parity.py).
"""
import pytest
import torch

import wan
from tiny_dit import assert_close, inputs, official_dit, save_safetensors, state_dict_of
from test_dit_parity import _official_forward
from wan.dit import attention
from wan.errors import InputError
from wan.weights import ops

CPU_BACKENDS = ["auto", "sdpa", "split"]


def _qkv(dtype, lq=37, lk=53, batch=2, heads=3, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, heads, dim, generator=g).mul(2).to(dtype) for n in (lq, lk, lk)]


def _reference(q, k, v):
    """float64 softmax(q kᵀ / √D) v; [B, L, H, D] in, [B, Lq, H*D] out."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


@pytest.mark.parametrize("scores_bytes", [attention.SPLIT_SCORES_BYTES, 1])
def test_split_matches_float64_in_float32(monkeypatch, scores_bytes):
    """One chunk, and one query per chunk (the smallest memory bound): the same result."""
    monkeypatch.setattr(attention, "SPLIT_SCORES_BYTES", scores_bytes)
    q, k, v = _qkv(torch.float32)
    assert_close(attention.split(q, k, v), _reference(q, k, v))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_split_in_half_precision_is_within_rounding(monkeypatch, dtype):
    monkeypatch.setattr(attention, "SPLIT_SCORES_BYTES", 7 * 3 * 2 * 53 * 2)  # chunks of 7 queries
    q, k, v = _qkv(dtype)
    out, ref = attention.split(q, k, v), _reference(q, k, v)
    assert out.dtype == dtype and out.shape == ref.shape
    ulp = torch.finfo(dtype).eps * ref.abs().max().item()
    assert (out.double() - ref).abs().max().item() <= 4 * ulp


def test_auto_follows_the_table(monkeypatch):
    monkeypatch.setattr(ops, "_NATIVE", {torch.bfloat16: True, torch.float16: True})  # the table's CPU
    for (device_type, dtype), name in attention.AUTO_TABLE.items():
        assert attention.auto_backend(device_type, dtype) == name
    monkeypatch.setattr(ops, "_NATIVE", {torch.bfloat16: False, torch.float16: False})  # AVX2 only: split's half
    # products would take torch's generic kernel (30x slower than sdpa there)
    assert {attention.auto_backend("cpu", d) for d in (torch.bfloat16, torch.float16, torch.float32)} == {"sdpa"}
    monkeypatch.undo()
    assert attention.auto_backend("cuda", torch.bfloat16) == attention.AUTO_FALLBACK == "sdpa"
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = _qkv(dtype)
        chosen = attention.get_attention(attention.auto_backend("cpu", dtype))
        assert torch.equal(attention.auto(q, k, v), chosen(q, k, v))


def test_auto_on_cuda_takes_only_measured_and_installed_backends(monkeypatch):
    assert attention.CUDA_MEASURED == {}  # filled from benchmarks/gpu.py measurements only
    monkeypatch.setattr(attention, "CUDA_MEASURED", {torch.bfloat16: ("flash", "sage")})
    monkeypatch.setattr(attention, "_INSTALLED", {"flash": False, "sage": True})
    assert attention.auto_backend("cuda", torch.bfloat16) == "sage"
    assert attention.auto_backend("cuda", torch.float16) == "sdpa"  # not measured for this dtype
    monkeypatch.setattr(attention, "_INSTALLED", {"flash": False, "sage": False})
    assert attention.auto_backend("cuda", torch.bfloat16) == "sdpa"


def test_unknown_backend_names_the_choices():
    with pytest.raises(InputError, match="unknown; choose one of .*'auto'"):
        attention.get_attention("fast")


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    ref = official_dit("t2v")
    return ref, save_safetensors(state_dict_of(ref), tmp_path_factory.mktemp("dit") / "dit.safetensors")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_backend_matches_official_in_float32(official, backend):
    ref, path = official
    model = wan.load_dit(path, attention=backend)
    x, t, ctx, _ = inputs(16)
    with torch.no_grad():
        assert_close(model(x, t, ctx), _official_forward(ref, x, t, ctx))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_backend_stays_close_to_official_in_bf16(official, backend):
    ref, path = official
    model = wan.load_dit(path, dtype="bf16", attention=backend)
    x, t, ctx, _ = inputs(16)
    with torch.no_grad():
        expected = _official_forward(ref, x, t, ctx)
        out = model(x, t, ctx)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max() <= 3e-2 * expected.abs().max()
