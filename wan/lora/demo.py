"""Small random LoRAs that fit a given DiT file, for ``python -m wan.generate --demo --lora demo`` and the example
workflow tests (the tiny demo models have no published LoRA)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

DEMO = "demo"  # the --lora value that stands for a random LoRA fitting the demo models
_LAYERS = re.compile(r"blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])\.weight")


def write_demo_lora(dit_path, out_path, rank: int = 4, seed: int = 0, std: float = 0.05) -> Path:
    """A random LoRA (Comfy key names: ``lora_down`` / ``lora_up`` / ``alpha``) on every attention and FFN layer of
    the DiT at ``dit_path`` (a file or an official folder)."""
    from safetensors.torch import save_file

    from ..weights.checkpoint import read_state_dict
    from ..dit.keys import normalize_keys

    weights, _, _ = normalize_keys(read_state_dict(dit_path, what="DiT file"))
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, w in sorted(weights.items()):
        if _LAYERS.fullmatch(name):
            stem = "diffusion_model." + name[: -len(".weight")]
            tensors[f"{stem}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * std
            tensors[f"{stem}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * std
            tensors[f"{stem}.alpha"] = torch.tensor(rank / 2.0)
    save_file(tensors, str(out_path))
    return Path(out_path)


def resolve_demo_loras(choices, folder: Path, dit: Path) -> tuple:
    """``choices`` with each ``demo`` file replaced by a random LoRA written into ``folder`` for the DiT ``dit``."""
    out = []
    for i, choice in enumerate(choices):
        if str(choice.path) == DEMO:
            path = write_demo_lora(dit, Path(folder) / f"demo_lora_{i}.safetensors", seed=i)
            choice = dataclasses.replace(choice, path=path)
        out.append(choice)
    return tuple(out)
