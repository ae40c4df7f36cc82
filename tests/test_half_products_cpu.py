"""Half-precision matrix products on a CPU without native support (``wan.weights.ops.linear``): bf16 / fp16 operands
widened to float32, multiplied, rounded once to the input dtype.

Oracles: (1) the float64 product of the same half-precision operands, rounded once to the half dtype: ours may differ
from it only by float32 summation order, so max|ours - ref| <= 2 ulp of the half dtype at the output's magnitude plus
1e-6 relative (a float32 accumulation error bound for K <= 4096); (2) torch's own half-precision ``F.linear`` (the
path on CPUs with native support), within the same bound; (3) blocks of input and weight rows equal the whole product bit for bit. The
widened path is forced on (``_NATIVE``) so that the test runs the same on every CPU.
"""
import pytest
import torch
import torch.nn.functional as F

from wan.weights import ops
from wan.weights.ops import Linear, linear


@pytest.fixture
def widened(monkeypatch):
    monkeypatch.setattr(ops, "_NATIVE", {torch.bfloat16: False, torch.float16: False})


def _operands(dtype, rows=37, k=256, n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, rows, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) * k ** -0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    return x, w, b


def _bound(ref: torch.Tensor, dtype) -> torch.Tensor:
    ulp = torch.finfo(dtype).eps  # relative spacing at 1; scaled by each value's magnitude below
    return 2 * ulp * ref.abs().clamp_min(torch.finfo(dtype).tiny) + 1e-6 * ref.abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_widened_product_is_the_rounded_exact_product(widened, dtype):
    x, w, b = _operands(dtype)
    out = linear(x, w, b)
    assert out.dtype == dtype and out.shape == (2, 37, 96)
    ref = F.linear(x.double(), w.double(), b.double())
    assert ((out.double() - ref).abs() <= _bound(ref, dtype).double()).all()
    torch_half = F.linear(x, w, b)  # torch's own kernel (native or generic): the same product within rounding
    assert ((out.double() - torch_half.double()).abs() <= 2 * _bound(ref, dtype).double()).all()


def test_blocks_equal_the_whole_product(widened, monkeypatch):
    x, w, b = _operands(torch.bfloat16, rows=50)
    whole = linear(x, w, b)
    assert ops.wide_block(256) == ops.WIDE_VALUES // 256 and ops.wide_block(1 << 20) == 256  # (the floor)
    monkeypatch.setattr(ops, "wide_block", lambda k: 40)  # 100 input rows, 96 weight rows: 3 blocks each
    assert torch.equal(linear(x, w, b), whole)
    assert torch.equal(linear(x, w, None), F.linear(x.float(), w.float()).to(torch.bfloat16))


def test_other_inputs_take_torch_own_product(widened):
    x, w, b = _operands(torch.float32)
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))
    ops._NATIVE[torch.bfloat16] = True  # a CPU with native bf16 products: torch's kernel as it is
    xb, wb, bb = _operands(torch.bfloat16)
    assert torch.equal(linear(xb, wb, bb), F.linear(xb, wb, bb))


def test_layer_uses_it(widened):
    layer = Linear(256, 96).to(torch.bfloat16)
    x, _, _ = _operands(torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x.float(), layer.weight.float(), layer.bias.float()).to(torch.bfloat16))


def test_native_check_answers_for_this_cpu():
    for dtype in (torch.bfloat16, torch.float16):
        assert ops.native_half_products(dtype) in (True, False)


def test_half_vae_passes_compute_in_float32_on_such_a_cpu(widened, tmp_path):
    """A bf16 VAE on a CPU without native half products (its bf16 convolutions take a generic kernel, 660x slower
    than float32 on an AVX2 CPU) encodes and decodes in float32. Oracle: the same file loaded with dtype fp32 (the
    bf16 values exactly, in float32): equal outputs bit for bit. Its dtype stays bf16; its weights go back to bf16
    when it moves to another device."""
    from test_vae_tiny import official_vae, random_video, save_comfy
    from wan.vae import load_vae

    path = save_comfy(official_vae("2.1").state_dict(), tmp_path / "wan_2.1_vae_bf16.safetensors", dtype=torch.bfloat16)
    half, wide = load_vae(path), load_vae(path, dtype="fp32")
    assert half.dtype == torch.bfloat16 and half.pass_dtype == torch.float32 and wide.pass_dtype == torch.float32
    video = random_video("2.1", 5)
    z = torch.randn(1, 16, 2, 2, 3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(half.encode(video), wide.encode(video))
    assert torch.equal(half.decode(z, clamp=False), wide.decode(z, clamp=False))
    assert half.dtype == torch.bfloat16 and next(half.model.parameters()).dtype == torch.float32
    half.to("meta")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16} and half.pass_dtype == torch.bfloat16


def test_widened_call_rounds_once(widened):
    """``widened`` (the encoders' small convolutions): the float32 convolution of the same operands, rounded once."""
    g = torch.Generator().manual_seed(4)
    x, w, b = (torch.randn(1, 6, 9, 9, generator=g).bfloat16(), torch.randn(5, 6, 3, 3, generator=g).bfloat16(),
               torch.randn(5, generator=g).bfloat16())
    out = ops.widened(F.conv2d, x, w, b, padding=1)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.conv2d(x.float(), w.float(), b.float(), padding=1).to(torch.bfloat16))
    assert torch.equal(ops.widened(F.conv2d, x.float(), w.float(), None), F.conv2d(x.float(), w.float()))


def test_lora_side_path_gives_way_to_the_rebuilt_weight(widened):
    """On such a CPU a half-precision layer with a low-rank patch rebuilds its weight (float32 patching, as always)
    and widens the one product, instead of the two small half products of the side path."""
    from wan.weights.patches import LowRank

    layer = Linear(256, 96).to(torch.bfloat16)
    g = torch.Generator().manual_seed(5)
    layer.weight_patches = (LowRank(torch.randn(96, 4, generator=g), torch.randn(4, 256, generator=g), 0.5),)
    x, _, _ = _operands(torch.bfloat16, rows=400)
    assert not layer._side_path_is_cheaper(x)
    ref = F.linear(x.float(), layer.compute_weight(torch.bfloat16, x.device).float(), layer.bias.float())
    assert torch.equal(layer(x), ref.to(torch.bfloat16))
