"""Fully sharded weights (torch FSDP2, ``fully_shard``) for the DiT and the UMT5 text encoder, loaded shard-wise.

The module is built on the meta device and sharded there: every block (and, for the DiT, each embedding and the
head) becomes one FSDP unit whose parameters are gathered just before it runs and freed right after. The
checkpoint's tensors are memory-mapped; each rank copies (and converts to the compute dtype) only its own rows, so
no rank ever holds a whole model in memory.

Weights stored in a non-float format (fp8, scaled fp8, GGUF) carry extra per-layer state that FSDP would not
gather with them: sharding them is refused with a clear error; Ulysses sequence parallelism works with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor, Shard

from ..errors import InputError
from ..weights.ops import FP8_DTYPES


@dataclass
class FsdpSharding:
    """How one model is sharded: over which ranks (``mesh``), into which units, onto which device."""

    mesh: object  # a 1-D torch DeviceMesh
    device: torch.device
    units: Callable[[nn.Module], list[nn.Module]]
    forward_methods: tuple[str, ...] = ()  # entry points other than forward that use the root's own weights
    flag: str = "--dit_fsdp"

    def wrap(self, module: nn.Module) -> None:
        """Shard ``module`` (still on the meta device): its units first, then the root for what is left."""
        for unit in self.units(module):
            fully_shard(unit, mesh=self.mesh, reshard_after_forward=True)
        fully_shard(module, mesh=self.mesh, reshard_after_forward=True)
        for name in self.forward_methods:
            register_fsdp_forward_method(module, name)

    def shard(self, key: str, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of checkpoint tensor ``full`` (FSDP's dim-0 split) as a DTensor on ``device``."""
        if full.dtype in FP8_DTYPES or not full.is_floating_point():
            self.refuse(key, str(full.dtype).replace("torch.", ""))
        size, index = self.mesh.size(), self.mesh.get_local_rank()
        chunks = torch.chunk(full, size, dim=0)
        local = chunks[index] if index < len(chunks) else full.new_empty((0, *full.shape[1:]))
        return DTensor.from_local(local.to(self.device), self.mesh, [Shard(0)], run_check=False,
                                  shape=full.shape, stride=full.stride())

    def refuse_quantized(self, quantized: dict) -> None:
        """Layers stored in a compact format (GGUF, comfy_quant) cannot be sharded either."""
        for name, layer in quantized.items():
            self.refuse(f"{name}.weight", str(layer.format))

    def refuse(self, key: str, stored: str) -> None:
        raise InputError(
            f"{self.flag} cannot shard weights stored as {stored} ('{key}'): FSDP would not gather their per-layer "
            f"scales and format with them. Run without {self.flag} (Ulysses sequence parallelism alone, "
            f"--ulysses_size N, works with them), or use a bf16 / fp16 checkpoint.")


def dit_units(model: nn.Module) -> list[nn.Module]:
    """Each block (VACE blocks too), each embedding and the head (the patch embeddings stay with the root); the S2V
    DiT's audio injector and each face adapter block of the Animate DiT too (they run between the blocks, outside
    the root's ``prepare``; the Animate motion and face encoders run in ``prepare`` and stay with the root)."""
    face = getattr(model, "face_adapter", None)
    units = [*model.blocks, *getattr(model, "vace_blocks", ()), *(face.fuser_blocks if face is not None else ()),
             model.text_embedding, model.time_embedding, model.time_projection, model.head]
    return units + [m for m in (getattr(model, "img_emb", None), getattr(model, "audio_injector", None))
                    if m is not None]


def t5_units(model: nn.Module) -> list[nn.Module]:
    """Each block and the token embedding (the final norm stays with the root)."""
    return [*model.blocks, model.token_embedding]


def dit_sharding(mesh, device) -> FsdpSharding:
    return FsdpSharding(mesh, torch.device(device), dit_units, ("prepare",), "--dit_fsdp")


def t5_sharding(mesh, device) -> FsdpSharding:
    return FsdpSharding(mesh, torch.device(device), t5_units, (), "--t5_fsdp")


def resident_bytes(module: nn.Module) -> int:
    """Bytes of parameters this rank holds: its shards of sharded parameters, all of the others."""
    total = 0
    for p in module.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        total += local.numel() * local.element_size()
    return total
