"""Every LoRA key scheme, read and applied exactly.

Oracle: diffusers (``WanPipeline.lora_state_dict`` conversion, fused by the plain ``W += s · B @ A`` rule; see
``lora_schemes``) on a tiny ``WanTransformer3DModel`` with the same random weights, float32. Schemes diffusers
cannot read (VideoX-Fun, DiffSynth, PEFT ``base_model.model.``, LyCORIS names) are checked against diffusers
reading their Comfy-named twin (the same tensors). Plus a plain hand computation of W + s·(α/r)·BA for one layer.
Tolerance: max|ours - ref| <= 1e-4 · max|ref| + 1e-5.
"""
import pytest
import torch

import wan
from lora_schemes import (BLOCK_LINEARS, DIFFUSERS_READS, NO_ALPHA, WRITERS, diffusers_forward, diffusers_fused,
                          random_lora, write)
from tiny_dit import LAYERS, assert_close, diffusers_dit, inputs
from wan.lora import load_lora

STRENGTH = 0.8
SCHEMES = {"comfy": "Comfy / original", "comfy_ab": "Comfy / original", "kohya": "kohya / musubi-tuner",
           "videox_fun": "VideoX-Fun", "diffusers": "diffusers / PEFT", "diffsynth": "DiffSynth",
           "diffsynth_pipe": "DiffSynth", "peft_base": "PEFT", "lycoris": "LyCORIS / SimpleTuner"}
BLOCKS = [f"blocks.{i}.{m}" for i in range(LAYERS) for m in BLOCK_LINEARS]
EXTRA = ["head.head", "time_projection.1", "text_embedding.0", "text_embedding.2", "time_embedding.0",
         "time_embedding.2"]
BIASES = ["blocks.0.self_attn.q", "blocks.1.ffn.2", "head.head"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ref = diffusers_dit()
    folder = tmp_path_factory.mktemp("dit") / "transformer"
    ref.save_pretrained(folder)
    ours = wan.load_dit(folder)
    return ref, ours, {k: v.shape for k, v in ours.state_dict().items()}


def _lora_for(scheme, shapes):
    """kohya/musubi files hold exactly the block layers (diffusers' musubi reader accepts nothing else)."""
    modules = BLOCKS if scheme in ("kohya", "videox_fun") else BLOCKS + EXTRA
    biases = BIASES if scheme in ("comfy", "comfy_ab", "diffusers") else ()
    return random_lora(shapes, modules, alpha=None if scheme in NO_ALPHA else 3.0, bias_modules=biases)


@pytest.mark.parametrize("scheme", list(WRITERS))
def test_scheme_matches_diffusers(scheme, models, tmp_path):
    ref, ours, shapes = models
    lora = _lora_for(scheme, shapes)
    path = write(scheme, lora, tmp_path / f"{scheme}.safetensors")
    oracle_path = path if scheme in DIFFUSERS_READS else write("comfy", lora, tmp_path / "twin.safetensors")
    loaded = load_lora(path)
    assert loaded.scheme == SCHEMES[scheme] and loaded.unmatched == ()
    model = wan.apply_lora(wan.ExpertSet(ours), loaded, STRENGTH).high
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        out = model(x, t, ctx)
    assert_close(out, diffusers_forward(diffusers_fused(ref, oracle_path, STRENGTH), x, t, ctx))


def test_one_layer_by_hand(models, tmp_path):
    """W' = W + s · (alpha / rank) · up @ down for one layer, with rank = rows of down (5 here) and alpha 3."""
    _, ours, shapes = models
    lora = random_lora(shapes, ["blocks.1.cross_attn.v"], rank=5, alpha=3.0)
    model = wan.apply_lora(ours, write("comfy", lora, tmp_path / "l.safetensors"), strength=-0.6)
    m = "blocks.1.cross_attn.v"
    expected = ours.get_parameter(f"{m}.weight") + (-0.6) * (3.0 / 5) * (lora.up[m] @ lora.down[m])
    assert_close(model.get_parameter(f"{m}.weight"), expected, rel=1e-6, abs_=0)


def test_alpha_missing_means_scale_one(models, tmp_path):
    _, ours, shapes = models
    m = "blocks.0.self_attn.k"
    lora = random_lora(shapes, [m], rank=8, alpha=None)
    model = wan.apply_lora(ours, write("comfy", lora, tmp_path / "l.safetensors"))
    expected = ours.get_parameter(f"{m}.weight") + lora.up[m] @ lora.down[m]
    assert_close(model.get_parameter(f"{m}.weight"), expected, rel=1e-6, abs_=0)


def test_i2v_lora_matches_diffusers_on_an_i2v_model(tmp_path):
    """2.1 I2V: k_img / v_img (diffusers add_k_proj / add_v_proj) and the image embedder's linears."""
    ref = diffusers_dit(36, 16, image_dim=48)
    ref.save_pretrained(tmp_path / "transformer")
    ours = wan.load_dit(tmp_path / "transformer")
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    modules = BLOCKS + [f"blocks.{i}.cross_attn.{n}" for i in range(LAYERS) for n in ("k_img", "v_img")]
    lora = random_lora(shapes, modules + ["img_emb.proj.1", "img_emb.proj.3"])
    path = write("comfy", lora, tmp_path / "i2v.safetensors")
    model = wan.apply_lora(ours, path, STRENGTH)
    x, t, ctx, y = inputs(16, 20)
    clip = torch.randn(2, 5, 48)
    with torch.no_grad():
        out = model(x, t, ctx, clip_fea=clip, y=y)
    assert_close(out, diffusers_forward(diffusers_fused(ref, path, STRENGTH), x, t, ctx, y, clip))
