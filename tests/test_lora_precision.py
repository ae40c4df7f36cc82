"""LoRAs on every weight precision: fp16 / bf16 / fp32 merged in float32 and stored in the weight's dtype (float32 for
the DiT's float32 islands, e.g. the head); fp8 and Comfy scaled fp8 weights kept fp8 and patched on the fly
(dequantised base, then the exact delta).

Oracles: a hand computation ``(W.float() + s · (α/r) · up @ down).to(dtype)`` (bit equality) for float weights; for
fp8, the official Wan ``WanModel`` (PyPI ``wan22``) run in float32 with the dequantised weights plus the exact
delta, max|ours - ref| <= 1e-4 · max|ref| + 1e-5 — the only rounding left is the fp8 base weight's own, which
both sides share.
"""
import pytest
import torch

import wan
from lora_schemes import BLOCK_LINEARS, merged_by_hand, official_forward, random_lora, write
from tiny_dit import LAYERS, assert_close, inputs, official_dit, save_safetensors, state_dict_of
from wan.dit.islands import is_float32_island
from wan.weights.ops import FP8_DTYPES, Linear

STRENGTH = 0.9
MODULES = [f"blocks.{i}.{m}" for i in range(LAYERS) for m in BLOCK_LINEARS] + ["head.head", "text_embedding.0"]


@pytest.fixture(scope="module")
def official():
    ref = official_dit("t2v")
    return ref, state_dict_of(ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_weights_are_merged_in_float32_and_stored_in_their_dtype(official, tmp_path, dtype):
    _, sd = official
    half = {k: v.to(dtype) for k, v in sd.items()}
    model = wan.load_dit(save_safetensors(half, tmp_path / "dit.safetensors"))
    lora = random_lora({k: v.shape for k, v in sd.items()}, MODULES)
    patched = wan.apply_lora(model, write("comfy", lora, tmp_path / "l.safetensors"), STRENGTH)
    for m in MODULES:
        w = half[f"{m}.weight"].float()
        stored = torch.float32 if is_float32_island(f"{m}.weight") else dtype  # islands: wan/dit/islands.py
        expected = (w + STRENGTH * (lora.alpha.get(m, lora.down[m].shape[0]) / lora.down[m].shape[0])
                    * (lora.up[m] @ lora.down[m])).to(stored)
        got = patched.get_parameter(f"{m}.weight")
        assert got.dtype == stored and torch.equal(got, expected), m


def _fp8_state_dict(sd: dict, scaled: bool) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.dim() == 2 and ".norm" not in k:
            scale = v.abs().max() / 448.0 if scaled else torch.tensor(1.0)
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            if scaled:
                out[k[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            out[k] = v
    if scaled:
        out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


def _dequantised(fp8: dict) -> dict:
    return {k: (v.float() * fp8.get(k[: -len("weight")] + "scale_weight", torch.ones(1)) if v.dtype in FP8_DTYPES
                else v) for k, v in fp8.items() if not k.endswith("scale_weight") and k != "scaled_fp8"}


@pytest.mark.skipif(not FP8_DTYPES, reason="this torch build has no fp8")
@pytest.mark.parametrize("scaled,side_path", [(False, "auto"), (True, "auto"), (True, "never"), (True, "always")])
def test_fp8_stays_fp8_and_is_patched_on_the_fly(official, tmp_path, monkeypatch, scaled, side_path):
    ref, sd = official
    fp8 = _fp8_state_dict(sd, scaled)
    model = wan.load_dit(save_safetensors(fp8, tmp_path / "fp8.safetensors"), dtype="fp32")
    lora = random_lora({k: v.shape for k, v in sd.items()}, MODULES)
    patched = wan.apply_lora(model, write("comfy_ab", lora, tmp_path / "l.safetensors"), STRENGTH)
    for m in MODULES:
        layer, base = patched.get_submodule(m), model.get_submodule(m)
        assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight.data_ptr() == base.weight.data_ptr(), m
        assert len(layer.weight_patches) == 1 and base.weight_patches == ()
    monkeypatch.setattr(Linear, "side_path", side_path)
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        out = patched(x, t, ctx)
    assert_close(out, official_forward(ref, merged_by_hand(_dequantised(fp8), lora, STRENGTH), x, t, ctx))
