"""The block-streaming setting on the DiT loader nodes (``offload_blocks``), called as ComfyUI calls them."""
import pytest

from tiny_dit import official_dit, save_safetensors, state_dict_of


def _write(models_dir, name, seed=0):
    return save_safetensors(state_dict_of(official_dit("t2v", seed=seed)), models_dir / "diffusion_models" / name)


def test_load_dit_offload_blocks(pack, models_dir):
    _write(models_dir, "dit.safetensors")
    node = pack.nodes.dit.WanExpertsLoadDiT
    spec = node.INPUT_TYPES()["required"]["offload_blocks"]
    assert spec[0] == "INT" and spec[1]["default"] == 0 and spec[1]["min"] == -1 and spec[1]["tooltip"]
    (auto,) = node().load("dit.safetensors", "default", "auto", "sdpa", -1)
    assert auto.high.block_streaming.auto
    (two,) = node().load("dit.safetensors", "default", "auto", "sdpa", 1)
    assert two.high.block_streaming.blocks == 1


def test_load_moe_streams_both_experts(pack, models_dir):
    _write(models_dir, "high_noise.safetensors", 1)
    _write(models_dir, "low_noise.safetensors", 2)
    (pair,) = pack.nodes.dit.WanExpertsLoadMoE().load("high_noise.safetensors", "low_noise.safetensors", "default",
                                                      0.0, "sdpa", 2)
    assert pair.high.block_streaming.blocks == pair.low.block_streaming.blocks == 2


def test_bad_offload_blocks_fails_before_loading(pack, models_dir):
    with pytest.raises(ValueError, match="offload_blocks -4"):
        pack.wan.load_dit(models_dir / "diffusion_models" / "missing.safetensors", offload_blocks=-4)
