"""Initial noise exactly as the official scripts draw it: float32 ``randn`` of (C, T, h, w) from a CPU generator
seeded with the seed.

A batch follows one rule: sample ``k`` is drawn from its own generator seeded with ``seed + k`` (modulo 2**64, the
range of a torch seed). So sample 0 is the official noise for ``seed``, and any sample of a batch can be made
again alone, with batch size 1 and seed ``seed + k``.
"""
from __future__ import annotations

import torch

from ..checks import whole_number

SEED_RANGE = 2 ** 64


def sample_seed(seed: int, index: int) -> int:
    """The seed of batch sample ``index`` when the batch was made with ``seed``."""
    return (int(seed) + int(index)) % SEED_RANGE


def make_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise [B, C, T, h, w]; sample k equals a single sample made with seed ``seed + k``."""
    shape = tuple(whole_number(n, "noise shape", 1) for n in shape)
    seed = whole_number(seed, "seed", -(1 << 63), SEED_RANGE - 1)
    return torch.stack([_official_noise(shape[1:], sample_seed(seed, k)) for k in range(shape[0])])


def _official_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)
