"""The DiT loader nodes, called as ComfyUI calls them (no ComfyUI present: files under $WAN_EXPERTS_MODELS)."""
import pytest
import torch

from tiny_dit import inputs, official_dit, save_safetensors, state_dict_of


def _write(models_dir, name, kind="t2v", seed=0):
    return save_safetensors(state_dict_of(official_dit(kind, seed=seed)), models_dir / "diffusion_models" / name)


def test_load_dit_lists_and_loads_a_file(pack, models_dir):
    _write(models_dir, "wan2.1_t2v_1.3B_fp16.safetensors")
    node = pack.nodes.dit.WanExpertsLoadDiT
    assert node.INPUT_TYPES()["required"]["model_name"][0] == ["wan2.1_t2v_1.3B_fp16.safetensors"]
    (model,) = node().load("wan2.1_t2v_1.3B_fp16.safetensors", "default", "auto", "sdpa")
    assert not model.is_moe and model.high.variant == "wan21_t2v_14b"
    x, t, ctx, _ = inputs(16)
    with torch.no_grad():
        assert model.high(x, t, ctx).shape == x.shape


def test_load_dit_missing_file_names_the_folder(pack, models_dir):
    with pytest.raises(FileNotFoundError, match=r"'wan2.1_t2v_1.3B_fp16.safetensors' was not found.*diffusion_models"):
        pack.nodes.dit.WanExpertsLoadDiT().load("wan2.1_t2v_1.3B_fp16.safetensors")


@pytest.mark.parametrize("kind,auto", [("t2v", 0.875), ("i2v22", 0.900)])
def test_load_moe_auto_boundary(pack, models_dir, kind, auto):
    _write(models_dir, f"wan2.2_{kind}_high_noise_14B_fp16.safetensors", kind, seed=1)
    _write(models_dir, f"wan2.2_{kind}_low_noise_14B_fp16.safetensors", kind, seed=2)
    node = pack.nodes.dit.WanExpertsLoadMoE()
    (pair,) = node.load(f"wan2.2_{kind}_high_noise_14B_fp16.safetensors", f"wan2.2_{kind}_low_noise_14B_fp16.safetensors",
                        "default", 0.0, "sdpa")
    assert pair.is_moe and pair.boundary == auto
    assert pair.high.role == "high" and pair.low.role == "low"
    (pair,) = node.load(f"wan2.2_{kind}_high_noise_14B_fp16.safetensors", f"wan2.2_{kind}_low_noise_14B_fp16.safetensors",
                        "default", 0.8, "sdpa")
    assert pair.boundary == 0.8


def test_load_moe_refuses_a_5b_with_a_14b(pack, models_dir):
    _write(models_dir, "high.safetensors", "t2v")
    _write(models_dir, "low.safetensors", "ti2v")
    with pytest.raises(ValueError, match="not a pair"):
        pack.nodes.dit.WanExpertsLoadMoE().load("high.safetensors", "low.safetensors")
