"""VACE DiT parity, float32, tiny random weights (every parameter randomised: the official code zero-initialises
``before_proj``, ``after_proj`` and the head). Oracles: the official ``VaceWanModel`` (Wan 2.1
``wan/modules/vace_model.py``, rebuilt in ``oracles/vace_model.py`` on the ``wan22`` wheel's block and model
classes, since the Wan 2.1 repository is not on PyPI) and diffusers ``WanVACETransformer3DModel``. Weights are written
in each layout users have (official names = Comfy-Org repack, under ``model.diffusion_model.``, an official folder
with config.json, diffusers names, scaled fp8, GGUF) and loaded through ``wan.load_dit``.
Tolerance: max|ours - ref| <= 1e-4 * max|ref| + 1e-5 (``tiny_dit.assert_close``)."""
import json

import pytest
import torch

import wan
from tiny_dit import assert_close, save_safetensors, save_scaled_fp8, save_sharded, state_dict_of
from tiny_vace import (VACE_LAYERS, diffusers_vace, diffusers_vace_forward, official_vace, official_vace_forward,
                       vace_inputs)
from wan.dit.vace import VaceInputs, WanVaceDiT, vace_layers
from wan.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = official_vace()
    path = save_safetensors(state_dict_of(ref), tmp_path_factory.mktemp("vace") / "wan2.1_vace_tiny.safetensors")
    return ref, wan.load_dit(path)


@pytest.mark.parametrize("t,scale,batch", [(999.0, 1.0, 1), (412.0, 0.6, 2), (3.0, 1.7, 1)])
def test_forward_matches_official(pair, t, scale, batch):
    ref, ours = pair
    assert isinstance(ours, WanVaceDiT) and ours.vace_config.layers == VACE_LAYERS
    assert ours.variant == "wan21_vace_14b"  # not the 1.3B width: the 14B family by rule
    x, ctx, vace = vace_inputs(batch=batch)
    with torch.no_grad():
        out = ours(x, torch.full((batch,), t), ctx, vace=VaceInputs(vace, scale))
    assert_close(out, official_vace_forward(ref, x, t, ctx, vace, scale))


def test_hints_matter(pair):
    """The VACE branch changes the output (guards against a parity test passing with the hints ignored)."""
    ref, ours = pair
    x, ctx, vace = vace_inputs()
    with torch.no_grad():
        with_ctx = ours(x, torch.tensor([500.0]), ctx, vace=VaceInputs(vace))
        zero = ours(x, torch.tensor([500.0]), ctx, vace=VaceInputs(vace, 0.0))
        plain = ours(x, torch.tensor([500.0]), ctx)
    assert (with_ctx - zero).abs().max() > 1e-2 * zero.abs().max()
    assert torch.allclose(zero, plain, atol=1e-6)  # strength 0 = the model without a context


def test_diffusers_layout_matches_diffusers(tmp_path):
    """A diffusers folder (WanVACETransformer3DModel names, its config.json listing vace_layers) vs diffusers;
    layers (0, 3) are not the even spread, so the list must come from config.json."""
    ref = diffusers_vace(seed=3, vace_layers=(0, 3))
    folder = tmp_path / "diffusers_vace"
    ref.save_pretrained(folder, safe_serialization=True)
    ours = wan.load_dit(folder)
    assert ours.layout.startswith("diffusers") and ours.vace_config.layers == (0, 3)
    x, ctx, vace = vace_inputs(text_tokens=512, seed=5)  # diffusers does not pad the text to 512 tokens
    with torch.no_grad():
        out = ours(x, torch.tensor([700.0]), ctx, vace=VaceInputs(vace, 0.8))
    assert_close(out, diffusers_vace_forward(ref, x, 700.0, ctx, vace, 0.8))


def test_official_folder_with_config(tmp_path):
    """An official folder (sharded + config.json with vace_layers) with VACE blocks feeding blocks 0 and 3 of 4."""
    ref = official_vace(seed=4, vace_layers=(0, 3))
    folder = save_sharded(state_dict_of(ref), tmp_path / "Wan2.1-VACE-1.3B")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "vace_layers": [0, 3], "vace_in_dim": 96}))
    ours = wan.load_dit(folder)
    assert ours.vace_config.layers == (0, 3)
    x, ctx, vace = vace_inputs(seed=6)
    with torch.no_grad():
        out = ours(x, torch.tensor([250.0]), ctx, vace=VaceInputs(vace))
    assert_close(out, official_vace_forward(ref, x, 250.0, ctx, vace))


def test_comfy_prefix_and_scaled_fp8(tmp_path):
    """Comfy-Org repack names under ``model.diffusion_model.``; scaled fp8 Linear weights in the base and the VACE
    blocks (weight x scale_weight)."""
    ref = official_vace(seed=2)
    path = save_scaled_fp8(ref, ("blocks.", "vace_blocks."), tmp_path / "wan2.1_vace_fp8_scaled.safetensors")
    ours = wan.load_dit(path, dtype="float32")
    assert "scaled fp8" in ours.layout and ours.vace_blocks[1].after_proj.weight.dtype == torch.float8_e4m3fn
    x, ctx, vace = vace_inputs(seed=7)
    with torch.no_grad():
        out = ours(x, torch.tensor([500.0]), ctx, vace=VaceInputs(vace))
    assert_close(out, official_vace_forward(ref, x, 500.0, ctx, vace))


def test_vace_layers_rule():
    assert vace_layers(15, 30, None) == tuple(range(0, 30, 2))
    assert vace_layers(8, 40, None) == (0, 5, 10, 15, 20, 25, 30, 35)
    with pytest.raises(CheckpointError, match="VACE blocks"):
        vace_layers(5, 2, None)


def test_bad_context_is_named(pair):
    _, ours = pair
    x, ctx, vace = vace_inputs()
    t = torch.tensor([500.0])
    with pytest.raises(InputError, match="VACE context .* does not fit the latent"):
        ours(x, t, ctx, vace=VaceInputs(vace[:, :, :2]))
    with pytest.raises(InputError, match="VACE context .* does not fit the latent"):
        ours(x, t, ctx, vace=VaceInputs(vace[:, :32]))
    with pytest.raises(InputError, match="Wan VACE Conditioning"):
        ours(x, t, ctx, vace=vace)


def test_gguf_q8(tmp_path):
    """A GGUF file (ComfyUI-GGUF layout, Q8_0 Linear weights in the base and the VACE blocks, the 5-D patch
    embeddings apart in F16/F32) vs the official model given the same weights as gguf's numpy reference
    dequantises them."""
    import numpy as np
    from gguf import GGMLQuantizationType as T, GGUFReader, quants

    from wan.quant.gguf_write import write_gguf

    ref = official_vace(seed=8)
    path = tmp_path / "wan2.1_vace_tiny-Q8_0.gguf"
    types = write_gguf(path, state_dict_of(ref), T.Q8_0, prefix="model.diffusion_model.")
    assert types["vace_blocks.0.before_proj.weight"] == T.Q8_0
    reader = GGUFReader(path)
    sd = {t.name.removeprefix("model.diffusion_model."): torch.from_numpy(np.array(
        quants.dequantize(np.asarray(t.data), t.tensor_type), dtype=np.float32).reshape(list(reversed(t.shape.tolist()))))
        for t in reader.tensors}
    ref.load_state_dict(sd)
    ours = wan.load_dit(path, dtype="float32")
    assert "GGUF" in ours.layout and isinstance(ours, WanVaceDiT)
    x, ctx, vace = vace_inputs(seed=9)
    with torch.no_grad():
        out = ours(x, torch.tensor([800.0]), ctx, vace=VaceInputs(vace))
    assert_close(out, official_vace_forward(ref, x, 800.0, ctx, vace))


@pytest.mark.parametrize("scheme", ["comfy", "kohya"])
def test_lora_on_base_and_vace_blocks(pair, tmp_path, scheme):
    """A LoRA targeting base blocks and VACE blocks (incl. before_proj / after_proj), merged and on the fly, vs the
    official model with the weights merged by hand (W + s (alpha / r) up @ down)."""
    from lora_schemes import merged_by_hand, random_lora, write

    ref, ours = pair
    sd = state_dict_of(ref)
    shapes = {k: v.shape for k, v in sd.items()}
    modules = ["blocks.1.self_attn.q", "blocks.2.ffn.0", "vace_blocks.0.before_proj", "vace_blocks.0.cross_attn.k",
               "vace_blocks.1.after_proj", "vace_blocks.1.ffn.2"]
    lora = random_lora(shapes, modules, seed=11)
    path = write(scheme, lora, tmp_path / f"vace_{scheme}.safetensors")
    oracle = official_vace()
    oracle.load_state_dict(merged_by_hand(sd, lora, 0.7))
    x, ctx, vace = vace_inputs(seed=12)
    expected = official_vace_forward(oracle, x, 600.0, ctx, vace)
    for merge in (True, False):
        model = wan.apply_lora(ours, path, 0.7, merge=merge)
        with torch.no_grad():
            out = model(x, torch.tensor([600.0]), ctx, vace=VaceInputs(vace))
        assert_close(out, expected)
