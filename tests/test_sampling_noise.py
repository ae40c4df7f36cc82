"""Initial noise: sample 0 of a batch is the official noise for the seed, and sample k is the noise a batch of one
gets with seed + k. Oracle: the official draw written out by hand (a CPU ``torch.Generator`` seeded with the seed,
one float32 ``randn`` of (C, T, h, w), as ``wan/text2video.py`` draws it)."""
import torch

from wan.sampling import make_noise
from wan.sampling.noise import sample_seed

SHAPE = (3, 4, 2, 3, 5)


def _official(seed: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(SHAPE[1:], dtype=torch.float32, generator=generator)


def test_sample_k_is_the_official_noise_of_seed_plus_k():
    noise = make_noise(SHAPE, 42)
    assert noise.shape == SHAPE and noise.dtype == torch.float32
    for k in range(SHAPE[0]):
        assert torch.equal(noise[k], _official(42 + k))
        assert torch.equal(noise[k], make_noise((1, *SHAPE[1:]), 42 + k)[0])


def test_seeds_wrap_at_the_top_of_the_seed_range():
    top = 2 ** 64 - 1
    assert sample_seed(top, 1) == 0 and sample_seed(top, 0) == top
    noise = make_noise((2, *SHAPE[1:]), top)
    assert torch.equal(noise[0], _official(top)) and torch.equal(noise[1], _official(0))
