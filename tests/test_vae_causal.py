"""Causal convolutions of the VAE: a one-tap first chunk runs as a 2-D convolution with the official 3-D result.

Oracle: the official ``wan22`` ``CausalConv3d`` (modules/vae2_1.py), which zero-pads the past and runs a 3-D
convolution, on the whole sequence at once. Tolerance: max|ours - ref| <= 1e-6 * max|ref| (float32 rounding; the
2-D and 3-D kernels may sum in another order).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from oracles import official
from wan.vae.causal import CausalConv3d, TimeStream, slow_conv3d

CASES = {  # name -> (in, out, kernel, padding): the causal convs of the Wan VAEs
    "3x3x3": (6, 5, 3, 1),
    "1x1x1": (6, 5, 1, 0),
    "time 3x1x1": (6, 12, (3, 1, 1), (1, 0, 0)),
}


class _ConvWeights(TorchDispatchMode):
    """Records the weight rank of every convolution: 4 for 2-D, 5 for 3-D."""

    def __init__(self):
        super().__init__()
        self.ranks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.ranks.append(args[1].dim())
        return func(*args, **(kwargs or {}))


def _pair(case: str, seed: int = 0):
    cin, cout, kernel, padding = CASES[case]
    ref = official.load("modules.vae2_1").CausalConv3d(cin, cout, kernel, padding=padding)
    ours = CausalConv3d(cin, cout, kernel, padding=padding)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _assert_rounding_close(out, ref):
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-6 * ref.abs().max()


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_chunk_of_one_frame_is_a_2d_convolution_with_the_official_result(case):
    ours, ref = _pair(case)
    x = torch.randn(2, 6, 1, 7, 9)
    with torch.no_grad(), _ConvWeights() as convs:
        out = ours(x, TimeStream())
    assert convs.ranks == [4]
    with torch.no_grad():
        _assert_rounding_close(out, ref(x))


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunks_one_then_four_frames_equal_the_official_whole_sequence(case):
    ours, ref = _pair(case, seed=1)
    x = torch.randn(1, 6, 9, 5, 6)
    stream = TimeStream()
    with torch.no_grad():
        chunks = [ours(x[:, :, :1], stream), ours(x[:, :, 1:5], stream), ours(x[:, :, 5:], stream)]
        _assert_rounding_close(torch.cat(chunks, dim=2), ref(x))


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_frame_chunks_equal_the_official_whole_sequence(case):
    """The decoder's pattern: one frame per chunk, so the second chunk has two live taps and later ones three,
    each giving one output frame (a 2-D convolution over the frames stacked as channels at this small size)."""
    ours, ref = _pair(case, seed=2)
    x = torch.randn(1, 6, 4, 5, 6)
    stream = TimeStream()
    with torch.no_grad(), _ConvWeights() as convs:
        chunks = [ours(x[:, :, i:i + 1], stream) for i in range(4)]
    assert convs.ranks == [4] * 4
    with torch.no_grad():
        _assert_rounding_close(torch.cat(chunks, dim=2), ref(x))


def test_slow_path_rule_is_pytorchs():
    """PyTorch's CPU rule for float32, batch 1: oneDNN only when N·C·D·H > 20480; bf16 always takes oneDNN."""
    assert slow_conv3d(torch.empty(1, 384, 3, 16, 16)) and not slow_conv3d(torch.empty(1, 384, 3, 60, 104))
    assert not slow_conv3d(torch.empty(1, 384, 3, 16, 16, dtype=torch.bfloat16))


def test_several_output_frames_stay_a_3d_convolution_with_the_official_result():
    ours, ref = _pair("3x3x3", seed=3)
    x = torch.randn(1, 6, 3, 8, 9)  # no stream: two zero frames in front, three output frames
    with torch.no_grad(), _ConvWeights() as convs:
        out = ours(x)
    assert convs.ranks == [5]
    with torch.no_grad():
        _assert_rounding_close(out, ref(x))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_cpu_passes_keep_conv_weights_channels_last_with_unchanged_values(version, tmp_path):
    """A VAE loaded on the CPU has every conv weight in the channels-last layout of its CPU passes already (oneDNN
    would otherwise reorder each weight on every call); a VAE whose weights were put back in another layout (as
    after a pass on a GPU) is converted once by the next CPU pass; the values stay as loaded (the official-parity
    tests check those against the file), and every decode is identical."""
    from test_vae_tiny import official_vae, save_pth

    import wan.vae as wv

    reference = official_vae(version)
    vae = wv.load_vae(save_pth(reference, tmp_path / "vae.pth"))
    convs = {n: m for n, m in vae.model.named_modules() if isinstance(m, torch.nn.Conv3d)}
    big = [m for m in convs.values() if m.weight.shape[2:].numel() > 1]
    assert big and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in big)  # as loaded
    for name, value in reference.state_dict().items():
        if name.endswith(".weight") and value.dim() == 5:
            assert torch.equal(vae.model.get_parameter(name), value), name
    before = {name: m.weight.detach().clone() for name, m in convs.items()}
    z = torch.randn(1, vae.z_dim, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    first = vae.decode(z)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs.values())
    for name, module in convs.items():
        assert torch.equal(module.weight, before[name]), name
    assert torch.equal(vae.decode(z), first)
    vae.model.use_layout(torch.contiguous_format)  # as after a pass on a GPU: the next CPU pass converts again
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in big)
    assert torch.equal(vae.decode(z), first)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs.values())
