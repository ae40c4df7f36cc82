"""Bad GGUF and comfy_quant input fails before any heavy work, with a message naming the file and the problem."""
import json

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T, GGUFWriter, quants
from safetensors.torch import save_file

import wan
from oracles import official
from tiny_dit import official_dit, state_dict_of
from test_quant_gguf_dit import write_tiny_gguf
from wan.errors import CheckpointError
from wan.quant.gguf_write import write_gguf


@pytest.fixture(scope="module")
def weights():
    return state_dict_of(official_dit("t2v"))


def test_gguf_of_another_architecture(weights, tmp_path):
    write_gguf(tmp_path / "flux1-dev-Q8_0.gguf", weights, arch="flux")
    with pytest.raises(CheckpointError, match=r"flux1-dev-Q8_0.gguf.*'flux' architecture.*not a Wan DiT"):
        wan.load_dit(tmp_path / "flux1-dev-Q8_0.gguf")


def test_truncated_gguf(tmp_path):
    path = write_tiny_gguf(tmp_path / "partial.gguf")
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(CheckpointError, match=r"partial.gguf.*not a readable GGUF file.*truncated"):
        wan.load_dit(path)


def test_file_that_is_not_gguf(weights, tmp_path):
    (tmp_path / "renamed.gguf").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match=r"renamed.gguf.*not a readable GGUF file.*not a GGUF file"):
        wan.load_dit(tmp_path / "renamed.gguf")


def test_unsupported_quant_type_names_type_and_tensor(weights, tmp_path):
    path = tmp_path / "wan-IQ2_XXS.gguf"
    writer = GGUFWriter(str(path), "wan")
    for name, value in weights.items():
        if name == "blocks.1.ffn.0.weight":
            writer.add_tensor(name, np.zeros(quants.quant_shape_to_byte_shape(value.shape, T.IQ2_XXS), np.uint8),
                              raw_dtype=T.IQ2_XXS)
        else:
            writer.add_tensor(name, quants.quantize(value.numpy(), T.F32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match=r"wan-IQ2_XXS.gguf.*'blocks.1.ffn.0.weight' \(IQ2_XXS\).*Supported"):
        wan.load_dit(path)


def test_gguf_vae_given_to_the_dit_loader(tmp_path):
    vae = official.load("modules.vae2_1").WanVAE_(dim=8, z_dim=4)
    write_gguf(tmp_path / "wan_vae-Q8_0.gguf", {k: v.detach() for k, v in vae.state_dict().items()})
    with pytest.raises(CheckpointError, match=r"wan_vae-Q8_0.gguf.*looks like a Wan VAE.*for diffusion models only"):
        wan.load_dit(tmp_path / "wan_vae-Q8_0.gguf")


def test_gguf_text_encoder_given_to_the_dit_loader(tmp_path):
    write_gguf(tmp_path / "umt5-xxl-encoder-Q8_0.gguf", {"token_embd.weight": (64, 32)}, arch="t5encoder")
    with pytest.raises(CheckpointError, match=r"umt5-xxl-encoder-Q8_0.gguf.*'t5encoder' architecture"):
        wan.load_dit(tmp_path / "umt5-xxl-encoder-Q8_0.gguf")


def test_gguf_without_its_patch_embedding(weights, tmp_path):
    """ComfyUI-GGUF's converter sets the 5-D tensor aside; a file quantised without adding it back lacks it."""
    write_gguf(tmp_path / "raw.gguf", {k: v for k, v in weights.items() if k != "patch_embedding.weight"})
    with pytest.raises(CheckpointError, match=r"raw.gguf.*no 'patch_embedding.weight'.*fix_5d_tensors"):
        wan.load_dit(tmp_path / "raw.gguf")


def test_gguf_given_to_another_loader(tmp_path):
    path = write_tiny_gguf(tmp_path / "wan.gguf")
    with pytest.raises(CheckpointError, match=r"wan.gguf.*GGUF file.*only the DiT loaders"):
        wan.load_vae(path)


def _comfy_quant_file(path, weights, conf: dict, drop: str | None = None):
    sd = dict(weights)
    w = sd["blocks.0.self_attn.q.weight"]
    sd["blocks.0.self_attn.q.weight"] = w.to(torch.float8_e4m3fn)
    sd["blocks.0.self_attn.q.weight_scale"] = torch.tensor(1.0)
    sd["blocks.0.self_attn.q.comfy_quant"] = torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)
    sd.pop(drop, None)
    save_file(sd, str(path))
    return path


def test_comfy_quant_format_we_cannot_dequantise(weights, tmp_path):
    path = _comfy_quant_file(tmp_path / "wan_mxfp8.safetensors", weights, {"format": "mxfp8"})
    with pytest.raises(CheckpointError, match=r"wan_mxfp8.safetensors.*'blocks.0.self_attn.q'.*'mxfp8'.*supported"):
        wan.load_dit(path)


def test_comfy_quant_layer_without_its_scale(weights, tmp_path):
    path = _comfy_quant_file(tmp_path / "wan_fp8.safetensors", weights, {"format": "float8_e4m3fn"},
                             drop="blocks.0.self_attn.q.weight_scale")
    with pytest.raises(CheckpointError, match=r"wan_fp8.safetensors.*'blocks.0.self_attn.q'.*no 'weight_scale'"):
        wan.load_dit(path)


def test_comfy_quant_header_naming_a_missing_layer(weights, tmp_path):
    meta = {"_quantization_metadata": json.dumps({"layers": {"blocks.7.ffn.0": {"format": "nvfp4"}}})}
    save_file(dict(weights), str(tmp_path / "bad_header.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"bad_header.safetensors.*'blocks.7.ffn.0'.*does not hold"):
        wan.load_dit(tmp_path / "bad_header.safetensors")
