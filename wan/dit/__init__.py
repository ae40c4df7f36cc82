"""The Wan diffusion transformer.

Modules: ``config`` (sizes read from the weights), ``model`` (blocks, head, ``WanDiT``), ``attention``, ``rope``,
``islands`` (float32 layers), ``keys`` / ``gguf`` / ``loader`` (every file layout to one model), ``compile``
(compiled transformer blocks: ``CompileOptions`` on an ``ExpertSet``). Variants add their extra modules beside
``model.py`` (``vace``: the VACE blocks and ``VaceInputs``; ``s2v*``; ``animate*``) and reuse its blocks.

May import: ``wan.weights`` (Linear, checkpoints), ``wan.quant``, ``wan.memory`` (block streaming),
``wan.distributed`` (Ulysses), ``wan.variants``, ``wan.errors``; never sampling, the budget or the run.
"""
from .config import WanDiTConfig
from .loader import load_dit
from .model import WanDiT

__all__ = ["WanDiT", "WanDiTConfig", "load_dit"]
