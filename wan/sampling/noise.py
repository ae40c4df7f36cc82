"""Initial noise exactly as the official scripts draw it: float32 ``randn`` of (C, T, h, w) per sample from a CPU
generator seeded with the seed (samples of a batch follow each other in the generator's stream)."""
from __future__ import annotations

import torch


def make_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise [B, C, T, h, w]; sample 0 equals the official script's noise for ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.stack([torch.randn(tuple(shape[1:]), generator=generator, dtype=torch.float32)
                        for _ in range(shape[0])])
