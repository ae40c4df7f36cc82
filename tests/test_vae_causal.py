"""Causal convolutions of the VAE: a one-tap first chunk runs as a 2-D convolution with the official 3-D result.

Oracle: the official ``wan22`` ``CausalConv3d`` (modules/vae2_1.py), which zero-pads the past and runs a 3-D
convolution, on the whole sequence at once. Tolerance: max|ours - ref| <= 1e-6 * max|ref| (float32 rounding; the
2-D and 3-D kernels may sum in another order).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from oracles import official
from wan.vae.causal import CausalConv3d, TimeStream

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


def test_a_second_one_frame_chunk_with_one_past_frame_keeps_two_taps():
    """With one remembered frame the conv has two live taps: still a 3-D convolution, still the official result."""
    ours, ref = _pair("3x3x3", seed=2)
    x = torch.randn(1, 6, 2, 5, 6)
    stream = TimeStream()
    with torch.no_grad(), _ConvWeights() as convs:
        chunks = [ours(x[:, :, :1], stream), ours(x[:, :, 1:], stream)]
    assert convs.ranks == [4, 5]
    with torch.no_grad():
        _assert_rounding_close(torch.cat(chunks, dim=2), ref(x))
