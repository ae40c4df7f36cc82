"""Quantised DiT files: the scaled-fp8 marker is recognised under any prefix (ComfyUI's own Save Model layout), and
scale tensors of the wrong shape or with NaN / inf are refused at load, naming the file and the layer (not at the
first step, not blamed on the model or on overflow).

Oracle for the prefixed marker: a float32 model holding the dequantised weights (fp8 value x scale, by hand);
outputs must be identical (torch.equal), as for the unprefixed file in test_dit_layouts."""
import pytest
import torch
from safetensors.torch import load_file, save_file

import wan
from test_quant_comfy_quant import PREFIX, write_comfy_quant
from tiny_dit import official_dit, save_safetensors, state_dict_of, text_to_video
from wan.errors import CheckpointError

F8 = torch.float8_e4m3fn


def scaled_fp8(path, marker_prefix="model.diffusion_model.", change=None):
    """A Comfy scaled-fp8 DiT; returns the dequantised float32 weights. ``change(sd)`` damages it before saving."""
    weights = state_dict_of(official_dit("t2v"))
    fp8, dequant = {}, dict(weights)
    for key in [k for k, v in weights.items() if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2]:
        w = weights[key]
        scale = w.abs().max() / 448.0
        fp8[key] = (w / scale).to(F8)
        fp8[key[: -len("weight")] + "scale_weight"] = scale.reshape(1).float()
        dequant[key] = fp8[key].float() * scale
    sd = {**{k: v for k, v in weights.items() if k not in fp8}, **fp8}
    if change:
        change(sd)
    save_file({marker_prefix + "scaled_fp8": torch.empty(0, dtype=F8),
               **{"model.diffusion_model." + k: v.contiguous() for k, v in sd.items()}}, str(path))
    return dequant


@pytest.mark.parametrize("marker_prefix", ["model.diffusion_model.", "diffusion_model."])
def test_scaled_fp8_marker_under_a_prefix_loads(tmp_path, marker_prefix):
    dequant = scaled_fp8(tmp_path / "saved_by_comfy.safetensors", marker_prefix)
    model = wan.load_dit(tmp_path / "saved_by_comfy.safetensors", dtype="fp32")
    assert "scaled fp8" in model.layout and model.blocks[0].ffn[0].weight.dtype == F8
    assert torch.equal(text_to_video(model), text_to_video(wan.load_dit(save_safetensors(dequant, tmp_path / "ref.safetensors"))))


@pytest.mark.parametrize("scale,match", [
    (torch.ones(3), r"the fp8 scale of layer 'blocks.0.ffn.0' has shape \(3,\), which is neither one scale nor one "
                    r"per output row \(384\)"),
    (torch.tensor([float("nan")]), r"the fp8 scale of layer 'blocks.0.ffn.0' holds NaN or infinite values"),
    (torch.full((384, 1), float("inf")), r"the fp8 scale of layer 'blocks.0.ffn.0' holds NaN or infinite values"),
])
def test_bad_scaled_fp8_scale_is_refused_at_load(tmp_path, scale, match):
    scaled_fp8(tmp_path / "bad.safetensors", change=lambda sd: sd.update({"blocks.0.ffn.0.scale_weight": scale}))
    with pytest.raises(CheckpointError, match=r"'bad.safetensors': " + match):
        wan.load_dit(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("key,value,match", [
    ("blocks.0.self_attn.q.weight_scale", torch.ones(5), r"the fp8 scale of layer '.*blocks.0.self_attn.q' has "
                                                         r"shape \(5,\)"),
    ("blocks.0.self_attn.k.weight_scale", torch.tensor(float("inf")), r"the fp8 scale of layer '.*blocks.0.self_attn.k' holds NaN"),
    ("blocks.0.ffn.0.weight_scale", torch.ones(7, dtype=F8), r"the NVFP4 layer '.*blocks.0.ffn.0' has 7 block "
                                                             r"scales; its 384 x 256 weight needs"),
    ("blocks.0.ffn.0.weight_scale_2", torch.ones(2), r"the NVFP4 layer '.*blocks.0.ffn.0' has 2 tensor scales"),
    ("blocks.0.ffn.0.weight_scale", None, r"the NVFP4 layer '.*blocks.0.ffn.0' holds NaN or infinite scales"),
])
def test_bad_comfy_quant_scale_is_refused_at_load(tmp_path, key, value, match):
    path = tmp_path / "bad_quant.safetensors"
    write_comfy_quant(path, "markers")
    sd = load_file(str(path))
    if value is None:  # one block scale NaN (e4m3fn's 0x7f)
        raw = sd[PREFIX + key].view(torch.uint8).clone()
        raw.view(-1)[5] = 0x7F
        value = raw.view(F8)
    sd[PREFIX + key] = value
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"'bad_quant.safetensors': " + match):
        wan.load_dit(path)


@pytest.mark.parametrize("qtype,offset", [("Q8_0", 0), ("Q4_K", 2), ("Q6_K", 208)])
def test_gguf_block_scale_nan_is_named_at_load(tmp_path, qtype, offset):
    """The first block's float16 scale (Q4_K: its min) set to NaN in the file: the tensor is named at load."""
    from gguf import GGMLQuantizationType as T

    from wan.quant.gguf_header import GGUFHeader
    from wan.quant.gguf_write import write_gguf

    path, name = tmp_path / f"wan-{qtype}.gguf", "blocks.1.ffn.0.weight"
    sd = state_dict_of(official_dit("t2v"))
    write_gguf(path, {k: tuple(v.shape) if k == name else v for k, v in sd.items()}, T.Q8_0, types={name: T[qtype]})
    info = next(t for t in GGUFHeader(path).tensors if t.name == name)
    assert info.tensor_type == T[qtype]
    raw = bytearray(path.read_bytes())
    raw[info.data_offset + offset:info.data_offset + offset + 2] = b"\x00\x7e"  # float16 NaN
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"wan-{qtype}.gguf': the quantised tensor '{name}' \({qtype}\) has "
                                              rf"1 block\(s\) whose scale is NaN or infinite"):
        wan.load_dit(path)
