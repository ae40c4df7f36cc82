"""Full differences (``.diff`` / ``.diff_b`` / ``.diff_m``, norm ``.diff``), LoKr, LoHa, DoRA and alphas kept in
file metadata.

Oracles: the official Wan ``WanModel`` (PyPI ``wan22``) run with a state dict patched by hand (W + s · diff), float32,
max|ours - ref| <= 1e-4 · max|ref| + 1e-5 (diffusers drops ``.diff`` keys, so it cannot serve here); for LoKr /
LoHa / DoRA / metadata alphas, plain hand computations of each published rule on one layer (rel 1e-5).
"""
import json
import math

import pytest
import torch
from safetensors.torch import save_file

import wan
from lora_schemes import official_and_ours, official_forward
from tiny_dit import DIM, assert_close, inputs
from wan.errors import InputError

Q = "blocks.0.self_attn.q"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return official_and_ours(tmp_path_factory.mktemp("dit"))


def _save(tensors: dict, path, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def test_full_differences_match_the_hand_patched_official_model(pair, tmp_path):
    """lightx2v-style file: a block modulation (diff_m), norms, a Linear weight and biases, the head."""
    ref, sd, ours = pair
    g = torch.Generator().manual_seed(4)
    diffs = {  # official parameter -> (LoRA key, difference)
        "blocks.0.modulation": "diffusion_model.blocks.0.diff_m",
        "blocks.1.modulation": "diffusion_model.blocks.1.modulation.diff",
        "blocks.1.self_attn.norm_q.weight": "diffusion_model.blocks.1.self_attn.norm_q.diff",
        "blocks.0.cross_attn.norm_k.weight": "diffusion_model.blocks.0.cross_attn.norm_k.diff",
        "blocks.0.norm3.weight": "diffusion_model.blocks.0.norm3.diff",
        "blocks.0.norm3.bias": "diffusion_model.blocks.0.norm3.diff_b",
        "blocks.0.ffn.0.weight": "diffusion_model.blocks.0.ffn.0.diff",
        "blocks.1.cross_attn.k.bias": "diffusion_model.blocks.1.cross_attn.k.diff_b",
        "head.head.weight": "diffusion_model.head.head.diff",
        "head.head.bias": "diffusion_model.head.head.diff_b",
        "head.modulation": "diffusion_model.head.diff_m",
        "time_projection.1.bias": "diffusion_model.time_projection.1.diff_b",
    }
    tensors = {key: torch.randn(sd[p].shape, generator=g) * 0.05 for p, key in diffs.items()}
    path = _save(tensors, tmp_path / "distill.safetensors")
    model = wan.apply_lora(ours, path, strength=0.7)
    by_hand = dict(sd)
    for p, key in diffs.items():
        by_hand[p] = sd[p] + 0.7 * tensors[key]
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        assert_close(model(x, t, ctx), official_forward(ref, by_hand, x, t, ctx))


def _kron(a, b):
    """kron(a, b) written out: block (i, j) is a[i, j] · b."""
    return (a[:, None, :, None] * b[None, :, None, :]).reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1])


def test_lokr_by_hand(pair, tmp_path):
    """LoKr: ΔW = (alpha / rank) · kron(w1, w2_a @ w2_b), rank = rows of w2_b (LyCORIS / ComfyUI)."""
    _, sd, ours = pair
    g = torch.Generator().manual_seed(5)
    w1, w2a, w2b = (torch.randn(s, generator=g) * 0.1 for s in ((4, 8), (DIM // 4, 3), (3, DIM // 8)))
    path = _save({f"lycoris_blocks_0_attn1_to_q.{n}": v for n, v in
                  (("lokr_w1", w1), ("lokr_w2_a", w2a), ("lokr_w2_b", w2b), ("alpha", torch.tensor(6.0)))},
                 tmp_path / "lokr.safetensors")
    model = wan.apply_lora(ours, path, strength=0.5)
    expected = sd[f"{Q}.weight"] + 0.5 * (6.0 / 3) * _kron(w1, w2a @ w2b)
    assert_close(model.get_parameter(f"{Q}.weight"), expected, rel=1e-5, abs_=0)


def test_loha_by_hand(pair, tmp_path):
    """LoHa: ΔW = (alpha / rank) · (w1_a @ w1_b) ⊙ (w2_a @ w2_b), rank = rows of w1_b."""
    _, sd, ours = pair
    g = torch.Generator().manual_seed(6)
    w = [torch.randn(s, generator=g) * 0.3 for s in ((DIM, 4), (4, DIM), (DIM, 4), (4, DIM))]
    names = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
    tensors = {f"lora_unet_blocks_0_self_attn_q.{n}": v for n, v in zip(names, w)}
    tensors["lora_unet_blocks_0_self_attn_q.alpha"] = torch.tensor(2.0)
    model = wan.apply_lora(ours, _save(tensors, tmp_path / "loha.safetensors"), strength=1.3)
    expected = sd[f"{Q}.weight"] + 1.3 * (2.0 / 4) * ((w[0] @ w[1]) * (w[2] @ w[3]))
    assert_close(model.get_parameter(f"{Q}.weight"), expected, rel=1e-5, abs_=0)


@pytest.mark.parametrize("axis,shape", [("rows", (DIM, 1)), ("columns", (1, DIM)), ("rows", (DIM,))])
def test_dora_by_hand(pair, tmp_path, axis, shape):
    """DoRA on a square layer: V = W + (alpha / rank) · up @ down, W_dora = m · V / ‖V‖ with the norm per output row
    (m [out, 1], PEFT's [out]) or per input column (m [1, in]); strength s: W + s · (W_dora - W) (ComfyUI)."""
    _, sd, ours = pair
    g = torch.Generator().manual_seed(7)
    up, down = torch.randn(DIM, 4, generator=g) * 0.1, torch.randn(4, DIM, generator=g) * 0.1
    m = torch.rand(shape, generator=g) + 0.5
    stem = f"diffusion_model.{Q}"
    magnitude_key = f"{stem}.lora_magnitude_vector" if len(shape) == 1 else f"{stem}.dora_scale"
    path = _save({f"{stem}.lora_up.weight": up, f"{stem}.lora_down.weight": down, f"{stem}.alpha": torch.tensor(2.0),
                  magnitude_key: m}, tmp_path / "dora.safetensors")
    w = sd[f"{Q}.weight"]
    v = w + (2.0 / 4) * up @ down
    norm = v.norm(dim=1, keepdim=True) if axis == "rows" else v.norm(dim=0, keepdim=True)
    w_dora = m.reshape(norm.shape) * v / norm
    for s in (1.0, 0.4):
        model = wan.apply_lora(ours, path, strength=s)
        assert_close(model.get_parameter(f"{Q}.weight"), w + s * (w_dora - w), rel=1e-5, abs_=0)


def test_diffusers_metadata_alpha(pair, tmp_path):
    """diffusers keeps PEFT's lora_alpha (and alpha_pattern) in the file header: scale = lora_alpha / r."""
    _, sd, ours = pair
    g = torch.Generator().manual_seed(8)
    mods = {Q: "blocks.0.attn1.to_q", "blocks.1.ffn.0": "blocks.1.ffn.net.0.proj"}
    tensors, pieces = {}, {}
    for m, d in mods.items():
        a, b = torch.randn(4, sd[f"{m}.weight"].shape[1], generator=g), torch.randn(sd[f"{m}.weight"].shape[0], 4,
                                                                                     generator=g)
        tensors[f"transformer.{d}.lora_A.weight"], tensors[f"transformer.{d}.lora_B.weight"] = a * 0.1, b * 0.1
        pieces[m] = (b * 0.1) @ (a * 0.1)
    meta = {"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8,
                                                 "transformer.alpha_pattern": {"blocks.0.attn1.to_q": 2}})}
    model = wan.apply_lora(ours, _save(tensors, tmp_path / "d.safetensors", meta))
    assert_close(model.get_parameter(f"{Q}.weight"), sd[f"{Q}.weight"] + (2 / 4) * pieces[Q], rel=1e-5, abs_=0)
    ffn = "blocks.1.ffn.0.weight"
    assert_close(model.get_parameter(ffn), sd[ffn] + (8 / 4) * pieces["blocks.1.ffn.0"], rel=1e-5, abs_=0)


def test_peft_adapter_config_rslora(pair, tmp_path):
    """PEFT save_pretrained: adapter_config.json beside adapter_model.safetensors; rsLoRA: lora_alpha / sqrt(r)."""
    _, sd, ours = pair
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(9, DIM, generator=g) * 0.1, torch.randn(DIM, 9, generator=g) * 0.1
    _save({f"base_model.model.{Q}.lora_A.weight": a, f"base_model.model.{Q}.lora_B.weight": b},
          tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 9, "lora_alpha": 6, "use_rslora": True}))
    model = wan.apply_lora(ours, tmp_path / "adapter_model.safetensors", strength=0.5)
    expected = sd[f"{Q}.weight"] + 0.5 * (6 / math.sqrt(9)) * (b @ a)
    assert_close(model.get_parameter(f"{Q}.weight"), expected, rel=1e-5, abs_=0)


def test_tucker_factors_are_refused_by_name(pair, tmp_path):
    _, sd, ours = pair
    stem = f"diffusion_model.{Q}"
    path = _save({f"{stem}.lora_up.weight": torch.zeros(DIM, 2), f"{stem}.lora_down.weight": torch.zeros(2, DIM),
                  f"{stem}.lora_mid.weight": torch.zeros(2, 2)}, tmp_path / "tucker.safetensors")
    with pytest.raises(InputError, match="Tucker"):
        wan.apply_lora(ours, path)
