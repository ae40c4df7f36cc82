"""Where the float16 scales sit in each GGUF block type, and a check that they are finite.

A quantised block stores its codes and one or two float16 scales ("d" scales the codes, "min" is subtracted or
added per block). A NaN or infinite scale makes every value of its block non-finite, so the file is checked at load
(one strided read of two bytes per scale) and the tensor named, instead of the run failing later with a diagnosis
that blames the model or an overflow.
"""
from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

# type -> the byte offsets of its float16 scales in a block, with their role
SCALES = {
    T.Q8_0: ((0, "d"),), T.Q4_0: ((0, "d"),), T.Q5_0: ((0, "d"),), T.IQ4_NL: ((0, "d"),),
    T.Q4_1: ((0, "d"), (2, "min")), T.Q5_1: ((0, "d"), (2, "min")),
    T.Q2_K: ((80, "d"), (82, "min")), T.Q3_K: ((108, "d"),), T.Q4_K: ((0, "d"), (2, "min")),
    T.Q5_K: ((0, "d"), (2, "min")), T.Q6_K: ((208, "d"),), T.IQ4_XS: ((0, "d"),),
}


def nonfinite_scales(raw: np.ndarray, qtype: T) -> int:
    """How many blocks of ``raw`` (a tensor's uint8 blocks) have a NaN or infinite scale."""
    offsets = SCALES.get(qtype)
    if not offsets or raw.size == 0:
        return 0
    blocks = raw.reshape(-1, GGML_QUANT_SIZES[qtype][1])
    bad = np.zeros(len(blocks), dtype=bool)
    for offset, _ in offsets:
        scales = np.ascontiguousarray(blocks[:, offset:offset + 2]).view(np.float16).reshape(-1)
        bad |= ~np.isfinite(scales)
    return int(bad.sum())
