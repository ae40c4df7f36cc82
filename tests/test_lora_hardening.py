"""LoRA files that are broken or of an algorithm not read here end in CheckpointError naming the file, the key and
the problem (no raw Python error, no wrong "another model" diagnosis), and LyCORIS norm differences are read.

Oracle for ``w_norm`` / ``b_norm``: ComfyUI core's rule for them (a full difference: W' = W + strength · w_norm, the
bias likewise), computed by hand on the state dict and run through a freshly loaded model."""
import json

import pytest
import torch
from safetensors.torch import save_file

import wan
from tiny_dit import assert_close, official_dit, save_safetensors, state_dict_of, text_to_video
from wan.errors import CheckpointError
from wan.lora import load_lora

DOWN, UP = "diffusion_model.blocks.0.self_attn.q.lora_down.weight", "diffusion_model.blocks.0.self_attn.q.lora_up.weight"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    sd = state_dict_of(official_dit("t2v"))
    return save_safetensors(sd, folder / "dit.safetensors"), sd


def _lora(tmp_path, tensors: dict, name="bad_lora.safetensors", metadata=None):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _pair(rank=4, dim=256):
    return {DOWN: torch.randn(rank, dim) * 0.1, UP: torch.randn(dim, rank) * 0.1}


def test_lycoris_norm_differences_are_applied(base, tmp_path):
    path, sd = base
    g = torch.Generator().manual_seed(3)
    w = torch.randn(sd["blocks.0.norm3.weight"].shape, generator=g) * 0.1
    b = torch.randn(sd["blocks.0.norm3.bias"].shape, generator=g) * 0.1
    q = torch.randn(sd["blocks.1.self_attn.norm_q.weight"].shape, generator=g) * 0.1
    lora = _lora(tmp_path, {"lycoris_blocks_0_norm3.w_norm": w, "lycoris_blocks_0_norm3.b_norm": b,
                            "diffusion_model.blocks.1.self_attn.norm_q.w_norm": q}, "norms.safetensors")
    found = load_lora(lora)
    assert set(found.targets) == {"blocks.0.norm3.weight", "blocks.0.norm3.bias", "blocks.1.self_attn.norm_q.weight"}
    assert not found.unmatched
    strength = 0.7
    ref = dict(sd)
    ref["blocks.0.norm3.weight"] = sd["blocks.0.norm3.weight"] + strength * w
    ref["blocks.0.norm3.bias"] = sd["blocks.0.norm3.bias"] + strength * b
    ref["blocks.1.self_attn.norm_q.weight"] = sd["blocks.1.self_attn.norm_q.weight"] + strength * q
    expected = text_to_video(wan.load_dit(save_safetensors(ref, tmp_path / "ref.safetensors")))
    assert_close(text_to_video(wan.apply_lora(wan.load_dit(path), lora, strength)), expected)


@pytest.mark.parametrize("keys,algorithm", [
    ({"lycoris_blocks_0_self_attn_q.a1.weight": (4, 256), "lycoris_blocks_0_self_attn_q.a2.weight": (256, 4),
      "lycoris_blocks_0_self_attn_q.b1.weight": (4, 256), "lycoris_blocks_0_self_attn_q.b2.weight": (256, 4)},
     "GLoRA"),
    ({"lycoris_blocks_0_self_attn_q.oft_blocks": (4, 64, 64), "lycoris_blocks_0_self_attn_q.alpha": ()},
     "BOFT / OFT"),
    ({"base_model.model.blocks.0.self_attn.q.oft_r.weight": (4, 64, 64)}, "OFT \\(PEFT\\)"),
])
def test_unsupported_lycoris_algorithms_are_named(tmp_path, keys, algorithm):
    path = _lora(tmp_path, {k: torch.zeros(s) for k, s in keys.items()})
    with pytest.raises(CheckpointError, match=rf"bad_lora.safetensors' is a LyCORIS {algorithm} file .*not "
                                              rf"{algorithm}"):
        load_lora(path)


@pytest.mark.parametrize("change,match", [
    (lambda t: {DOWN: torch.zeros(0, 256), UP: torch.zeros(256, 0)}, r"'.*lora_(down|up).weight' has no values "
                                                                       r"\(shape \((0, 256|256, 0)\): rank or size 0\)"),
    (lambda t: {**t, UP: t[UP].index_put_((torch.tensor([3]),), torch.tensor(float("nan")))},
     r"'.*lora_up.weight' holds 4 NaN or infinite value\(s\) of 1024"),
    (lambda t: {**t, DOWN: t[DOWN].index_fill_(1, torch.tensor([0]), float("inf"))},
     r"'.*lora_down.weight' holds 4 NaN or infinite value\(s\)"),
    (lambda t: {**t, "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(float("nan"))},
     r"'.*self_attn.q.alpha' holds 1 NaN or infinite value\(s\) of 1"),
])
def test_broken_lora_tensors_are_named_at_load(tmp_path, change, match):
    with pytest.raises(CheckpointError, match=r"LoRA file 'bad_lora.safetensors': " + match):
        load_lora(_lora(tmp_path, change(_pair())))


PEFT_DOWN, PEFT_UP = "transformer.blocks.0.attn1.to_q.lora_A.weight", "transformer.blocks.0.attn1.to_q.lora_B.weight"


@pytest.mark.parametrize("config,match", [
    ({"lora_alpha": "sixteen", "r": 4}, r"lora_alpha is 'sixteen' \(str\), not a positive finite number"),
    ({"lora_alpha": [16], "r": 4}, r"lora_alpha is '\[16\]' \(list\)"),
    ({"lora_alpha": float("nan"), "r": 4}, r"lora_alpha is 'nan' \(float\)"),
    ({"lora_alpha": 16, "alpha_pattern": ["blocks.0.attn1.to_q", 8]}, r"alpha_pattern is .* \(list\), not a table"),
    ({"lora_alpha": 16, "alpha_pattern": {"blocks.0.attn1.to_q": "8"}},
     r"alpha_pattern\['blocks.0.attn1.to_q'\] is '8' \(str\)"),
    ({"lora_alpha": 16, "use_rslora": "false"}, r"use_rslora is 'false' \(str\), not true or false"),
])
def test_odd_peft_alpha_metadata_is_named(tmp_path, config, match):
    tensors = {PEFT_DOWN: torch.randn(4, 256) * 0.1, PEFT_UP: torch.randn(256, 4) * 0.1}
    path = _lora(tmp_path, tensors, metadata={"lora_adapter_metadata": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"LoRA 'bad_lora.safetensors': its PEFT setting " + match):
        load_lora(path)
