"""Every DiT file layout users have loads into the same model.

One set of random weights (official ``wan22`` WanModel, official keys) is written as: official single file,
official sharded folder (index + config.json), ``.pth``, Comfy-Org single file with ``model.diffusion_model.``
prefix, diffusers folder (keys converted by diffusers' own single-file converter, an independent mapping), Comfy
scaled fp8 and plain fp8. Outputs must be identical (torch.equal) to the official single file; fp8 files must
equal a float32 model holding the dequantised weights.
"""
import json

import pytest
import torch
from safetensors.torch import save_file

import wan
from tiny_dit import inputs, official_dit, save_safetensors, save_sharded, state_dict_of

F8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def weights():
    return state_dict_of(official_dit("t2v"))


@pytest.fixture(scope="module")
def reference_output(weights, tmp_path_factory):
    path = save_safetensors(weights, tmp_path_factory.mktemp("ref") / "wan2.1_t2v.safetensors")
    return _run(wan.load_dit(path))


def _run(model):
    x, t, ctx, _ = inputs(16)
    with torch.no_grad():
        return model(x, t, ctx)


def test_sharded_official_folder(weights, reference_output, tmp_path):
    model = wan.load_dit(save_sharded(weights, tmp_path / "Wan2.1-T2V-tiny"))
    assert torch.equal(_run(model), reference_output)


def test_pth_checkpoint(weights, reference_output, tmp_path):
    torch.save(weights, tmp_path / "dit.pth")
    assert torch.equal(_run(wan.load_dit(tmp_path / "dit.pth")), reference_output)


def test_comfy_prefixed_single_file(weights, reference_output, tmp_path):
    path = save_safetensors(weights, tmp_path / "wan2.1_t2v_comfy.safetensors", prefix="model.diffusion_model.")
    assert torch.equal(_run(wan.load_dit(path)), reference_output)


def test_diffusers_folder_from_diffusers_converter(weights, reference_output, tmp_path):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    converted = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in weights.items()})
    folder = tmp_path / "transformer"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in converted.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel", "num_attention_heads": 2}))
    model = wan.load_dit(folder)
    assert model.layout == "diffusers"
    assert torch.equal(_run(model), reference_output)


def _linear_weight_keys(weights):
    return [k for k, v in weights.items() if k.endswith(".weight") and v.dim() == 2 and "modulation" not in k]


def test_scaled_fp8_equals_dequantised_weights(weights, tmp_path):
    """Comfy scaled fp8: fp8 weight x per-layer scale_weight; weights stay fp8 in memory."""
    fp8, dequant = {}, dict(weights)
    for key in _linear_weight_keys(weights):
        w = weights[key]
        scale = w.abs().max() / 448.0
        q = (w / scale).to(F8)
        fp8[key] = q
        fp8[key[: -len("weight")] + "scale_weight"] = scale.reshape(1).float()
        dequant[key] = q.float() * scale
    sd = {**{k: v for k, v in weights.items() if k not in fp8}, **fp8}
    path = tmp_path / "wan2.1_t2v_fp8_scaled.safetensors"
    save_file({"scaled_fp8": torch.empty(0, dtype=F8),
               **{"model.diffusion_model." + k: v.contiguous() for k, v in sd.items()}}, str(path))
    model = wan.load_dit(path, dtype="fp32")
    assert "scaled fp8" in model.layout
    assert model.blocks[0].ffn[0].weight.dtype == F8
    expected = wan.load_dit(save_safetensors(dequant, tmp_path / "dequant.safetensors"))
    assert torch.equal(_run(model), _run(expected))


def test_plain_fp8_equals_upcast_weights_and_defaults_to_bf16(weights, tmp_path):
    sd = {k: (v.to(torch.float8_e5m2) if k in _linear_weight_keys(weights) else v) for k, v in weights.items()}
    path = save_safetensors(sd, tmp_path / "wan2.1_t2v_fp8_e5m2.safetensors")
    assert wan.load_dit(path).compute_dtype == torch.bfloat16  # default for fp8 files
    upcast = {k: v.float() for k, v in sd.items()}
    expected = wan.load_dit(save_safetensors(upcast, tmp_path / "upcast.safetensors"))
    assert torch.equal(_run(wan.load_dit(path, dtype="fp32")), _run(expected))


def test_official_a14b_folder_holds_both_experts(weights, tmp_path):
    folder = tmp_path / "Wan2.2-T2V-A14B"
    save_sharded(weights, folder / "high_noise_model", shards=2)
    save_sharded(state_dict_of(official_dit("t2v", seed=5)), folder / "low_noise_model", shards=2)
    high = wan.load_dit(folder, role="high")
    low = wan.load_dit(folder, role="low")
    assert high.variant == low.variant == "wan22_t2v_a14b" and (high.role, low.role) == ("high", "low")
    assert not torch.equal(high.head.head.weight, low.head.head.weight)
    pair = wan.load_moe(folder, folder)
    assert pair.boundary == 0.875 and pair.expert_for(875.0)[0] == "high" and pair.expert_for(874.9)[0] == "low"
    with pytest.raises(wan.errors.InputError, match="role='high' or role='low'"):
        wan.load_dit(folder)


def test_loading_maps_the_file_instead_of_copying(weights, tmp_path):
    """Same dtype: parameters are views of the memory-mapped file, so the weights are never held twice."""
    path = save_safetensors(weights, tmp_path / "mapped.safetensors")
    model = wan.load_dit(path)
    ptr = model.blocks[1].ffn[0].weight.data_ptr()
    maps = [line for line in open("/proc/self/maps") if str(path) in line]
    spans = [tuple(int(a, 16) for a in line.split()[0].split("-")) for line in maps]
    assert any(lo <= ptr < hi for lo, hi in spans)


def test_role_is_guessed_from_file_name(weights, tmp_path):
    path = save_safetensors(weights, tmp_path / "wan2.2_t2v_high_noise_14B_fp16.safetensors")
    model = wan.load_dit(path)
    assert model.role == "high" and model.variant == "wan22_t2v_a14b"
    assert wan.load_dit(path, role="single").role == "single"
