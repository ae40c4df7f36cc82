"""comfy_quant files (Comfy-Org per-layer quantisation): fp8 and NVFP4 layers dequantised exactly, others as stored.

The files are written here from the format definitions, independently of the loader: e2m1 codes from a table
computed from the bit layout (sign, 2 exponent bits, 1 mantissa bit), nearest-value rounding, two codes a byte
with the even element in the high nibble, fp8 e4m3 block scales of 16 placed by the cuBLAS tiled-layout formula
(``tile·512 + (r % 32)·16 + ((r % 128) // 32)·4 + c % 4``), a float32 tensor scale; fp8 layers as fp8 values and a
float32 tensor scale. Oracle: the same DiT loaded from a safetensors file of the reference dequantised weights
(value x tensor scale x block scale, float32). Tolerance: dequantised weights equal bit for bit; forwards
max|ours - ref| <= 1e-5 · max|ref|.
"""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import wan
from tiny_dit import assert_close, inputs, official_dit, save_safetensors, state_dict_of
from wan.memory.place import residency
from wan.memory.offload import held_back
from wan.weights.patching import merged_weight

PREFIX = "model.diffusion_model."
FORMATS = {"blocks.0.self_attn.q": "float8_e4m3fn", "blocks.0.self_attn.k": "float8_e4m3fn",
           "blocks.1.cross_attn.o": "float8_e5m2", "blocks.0.ffn.0": "nvfp4", "blocks.1.ffn.2": "nvfp4",
           "blocks.1.self_attn.o": "nvfp4", "head.head": "nvfp4", "text_embedding.2": "nvfp4"}


def e2m1_table() -> np.ndarray:
    values = []
    for code in range(16):
        exponent, mantissa = (code >> 1) & 3, code & 1
        magnitude = mantissa * 0.5 if exponent == 0 else 2.0 ** (exponent - 1) * (1 + mantissa / 2)
        values.append(-magnitude if code & 8 else magnitude)
    return np.array(values, dtype=np.float32)


def tile_scales(scales: np.ndarray) -> np.ndarray:
    rows, cols = scales.shape
    row_tiles, col_tiles = -(-rows // 128), -(-cols // 4)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    index = ((r // 128) * col_tiles + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
    out = np.zeros(row_tiles * col_tiles * 512, dtype=scales.dtype)
    out[index] = scales
    return out.reshape(row_tiles * 128, col_tiles * 4)


def nvfp4(w: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(stored tensors, reference dequantised weight) of a float32 weight whose sizes are multiples of 16."""
    w = w.float().numpy()
    rows, cols = w.shape
    table = e2m1_table()
    tensor_scale = np.float32(np.abs(w).max() / (448 * 6))
    blocks = w.reshape(rows, cols // 16, 16)
    block_fp8 = torch.from_numpy(np.abs(blocks).max(-1) / 6 / tensor_scale).to(torch.float8_e4m3fn)
    scale = block_fp8.float().numpy() * tensor_scale
    codes = np.abs(blocks[..., None] / scale[..., None, None] - table).argmin(-1).reshape(rows, cols)
    packed = (codes[:, 0::2] << 4 | codes[:, 1::2]).astype(np.uint8)
    tiled = tile_scales(block_fp8.view(torch.uint8).numpy())
    stored = {"weight": torch.from_numpy(packed), "weight_scale": torch.from_numpy(tiled).view(torch.float8_e4m3fn),
              "weight_scale_2": torch.tensor(tensor_scale)}
    reference = table[codes].reshape(rows, cols // 16, 16) * scale[..., None]
    return stored, torch.from_numpy(reference.reshape(rows, cols))


def fp8(w: torch.Tensor, fmt: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    dtype = getattr(torch, fmt)
    scale = (w.abs().max() / torch.finfo(dtype).max).float()
    values = (w / scale).to(dtype)
    return {"weight": values, "weight_scale": scale, "input_scale": torch.tensor(1.0)}, values.float() * scale


def write_comfy_quant(path, form: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a comfy_quant DiT (markers per layer, or the header list); return the reference float32 weights."""
    stored, reference, layers = {}, {}, {}
    for key, value in state_dict_of(official_dit("t2v", seed=seed)).items():
        layer, fmt = key.removesuffix(".weight"), FORMATS.get(key.removesuffix(".weight"))
        if fmt is None or not key.endswith(".weight"):
            stored[key] = value.bfloat16()  # plain layers stay as stored (bf16, as mixed files keep them)
            reference[key] = value.bfloat16().float()
            continue
        tensors, reference[key] = nvfp4(value) if fmt == "nvfp4" else fp8(value, fmt)
        stored.update({f"{layer}.{name}": t for name, t in tensors.items()})
        if form == "markers":
            stored[f"{layer}.comfy_quant"] = torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)
        else:
            layers[layer] = {"format": fmt}  # the header names layers without the file's prefix
    metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})} if layers else None
    save_file({PREFIX + k: v.contiguous() for k, v in stored.items()}, str(path), metadata=metadata)
    return reference


def _forward(model):
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        return model(x, t, ctx)


@pytest.mark.parametrize("form", ["markers", "header"])
def test_forward_equals_dequantised_reference(tmp_path, form):
    reference = write_comfy_quant(tmp_path / "wan_mixed.safetensors", form)
    model = wan.load_dit(tmp_path / "wan_mixed.safetensors", dtype="fp32")
    assert "comfy_quant (nvfp4 x5, scaled fp8 x3)" in model.layout
    for layer, fmt in FORMATS.items():
        linear = model.get_submodule(layer)
        assert torch.equal(merged_weight(linear, torch.float32), reference[f"{layer}.weight"]), layer
    ref_model = wan.load_dit(save_safetensors(reference, tmp_path / "reference.safetensors"), dtype="fp32")
    out = _forward(model)
    assert_close(out, _forward(ref_model), rel=1e-5, abs_=0.0)
    if form == "markers":  # streamed blocks carry their packed values and scales: the same result, bit for bit
        streamed = wan.load_dit(tmp_path / "wan_mixed.safetensors", dtype="fp32", offload_blocks=1)
        residency(streamed).load("cpu", exclude=held_back(streamed))
        assert torch.equal(_forward(streamed), out)


def test_layers_stay_compact_in_memory(tmp_path):
    write_comfy_quant(tmp_path / "wan_mixed.safetensors", "markers")
    model = wan.load_dit(tmp_path / "wan_mixed.safetensors")
    assert model.compute_dtype == torch.bfloat16
    ffn = model.blocks[0].ffn[0]  # 384 x 256
    assert (ffn.weight.dtype, tuple(ffn.weight.shape)) == (torch.uint8, (384, 128))
    assert ffn.weight_scale.dtype == torch.float8_e4m3fn and ffn.weight_scale_2.dtype == torch.float32
    assert ffn.weight_format.stored_bytes(ffn) < 384 * 256 * 0.6  # 4.5 bits a weight (scales padded to tiles)
    q = model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight_format.name == "scaled fp8"
    assert model.blocks[1].cross_attn.o.weight.dtype == torch.float8_e5m2
    assert model.blocks[0].self_attn.v.weight.dtype == torch.bfloat16  # a plain layer, as stored
