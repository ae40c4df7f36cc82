"""Give every parameter of a module random values (the official code zero-initialises some, e.g. the head)."""
import torch


@torch.no_grad()
def randomize_(module: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std)
    return module
