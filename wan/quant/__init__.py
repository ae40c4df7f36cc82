"""Stored-weight formats: how a ``Linear`` weight kept in a compact form becomes the real weight.

Every Linear computes with ``weight = dequantise(stored) + patches`` (see ``wan.weights.ops.Linear``): the format turns the
stored tensor (fp8, scaled fp8, GGUF blocks, comfy_quant, ...) into a real weight of the compute dtype, one layer
at a time, and LoRA patches (``wan.weights.patches``) are added on top. A plain float weight has no format: it is cast.

Modules: ``base`` (the protocol), ``fp8`` (scaled fp8), ``fp8_product`` (fp8 weights times e4m3-rounded
activations, ``torch._scaled_mm``, instead of dequantising), ``nvfp4`` and ``comfy_quant`` (Comfy-Org per-layer
quantisation), ``gguf_kernels`` / ``gguf_format`` / ``gguf_file`` (GGUF blocks, dequantised by torch code),
``gguf_write`` (write Wan state dicts as GGUF files, for tests and benchmarks). The GGUF modules import the ``gguf``
package and are imported only when a GGUF file is used.

May import: ``wan.weights.checkpoint`` (file constants), ``wan.errors``; ``wan.weights.ops`` imports it. It stays a
sibling of ``wan.weights``: the formats know nothing of layers, and the GGUF readers are used by the loaders too.
"""
from .base import QuantizedLayer, WeightFormat
from .fp8 import SCALED_FP8, ScaledFP8

__all__ = ["SCALED_FP8", "QuantizedLayer", "ScaledFP8", "WeightFormat"]
