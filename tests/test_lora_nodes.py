"""The LoRA nodes, called as ComfyUI calls them (files under $WAN_EXPERTS_MODELS/loras).

Oracle: the merged weights by hand (W + s · (α/r) · up @ down, ``lora_schemes.merged_by_hand``); bit equality for
"the input model is unchanged"."""
import pytest
import torch

from lora_schemes import BLOCK_LINEARS, merged_by_hand, random_lora, write
from tiny_dit import LAYERS, assert_close, inputs, official_dit, save_safetensors, state_dict_of

MODULES = [f"blocks.{i}.{m}" for i in range(LAYERS) for m in BLOCK_LINEARS]
HIGH, LOW = "wan2.2_t2v_high_noise_14B_fp16.safetensors", "wan2.2_t2v_low_noise_14B_fp16.safetensors"
Q = "blocks.0.self_attn.q.weight"


@pytest.fixture
def files(models_dir):
    sds = {}
    for seed, name in ((1, HIGH), (2, LOW)):
        sds[name] = state_dict_of(official_dit("t2v", seed=seed))
        save_safetensors(sds[name], models_dir / "diffusion_models" / name)
    shapes = {k: v.shape for k, v in sds[HIGH].items()}
    loras = {}
    for seed, name in ((3, "style_high.safetensors"), (4, "style_low.safetensors")):
        loras[name] = random_lora(shapes, MODULES, seed=seed)
        write("comfy", loras[name], models_dir / "loras" / name)
    return sds, loras


def _moe(pack):
    return pack.nodes.dit.WanExpertsLoadMoE().load(HIGH, LOW)[0]


def _out(model):
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        return model(x, t, ctx)


def test_lora_node_lists_files_applies_per_expert_and_leaves_its_input(pack, files):
    sds, loras = files
    node = pack.nodes.lora.WanExpertsLoRA
    assert node.INPUT_TYPES()["required"]["lora_name"][0] == ["style_high.safetensors", "style_low.safetensors"]
    moe = _moe(pack)
    before = _out(moe.high), _out(moe.low)
    (high_only,) = node().apply(moe, "style_high.safetensors", 0.6, "high")
    (chained,) = node().apply(high_only, "style_low.safetensors", 1.2, "both")
    assert torch.equal(_out(moe.high), before[0]) and torch.equal(_out(moe.low), before[1])
    expected_high = merged_by_hand(merged_by_hand(sds[HIGH], loras["style_high.safetensors"], 0.6),
                                   loras["style_low.safetensors"], 1.2)
    expected_low = merged_by_hand(sds[LOW], loras["style_low.safetensors"], 1.2)
    assert_close(chained.high.get_parameter(Q), expected_high[Q], rel=1e-6, abs_=0)
    assert_close(chained.low.get_parameter(Q), expected_low[Q], rel=1e-6, abs_=0)


def test_pair_node_puts_each_file_on_its_expert(pack, files):
    sds, loras = files
    (model,) = pack.nodes.lora.WanExpertsLoRAPair().apply(_moe(pack), "style_high.safetensors", 1.0,
                                                          "style_low.safetensors", 0.5)
    assert_close(model.high.get_parameter(Q), merged_by_hand(sds[HIGH], loras["style_high.safetensors"], 1.0)[Q],
                 rel=1e-6, abs_=0)
    assert_close(model.low.get_parameter(Q), merged_by_hand(sds[LOW], loras["style_low.safetensors"], 0.5)[Q],
                 rel=1e-6, abs_=0)


def test_pair_node_needs_a_pair(pack, files):
    (single,) = pack.nodes.dit.WanExpertsLoadDiT().load(HIGH)
    with pytest.raises(ValueError, match="Load Wan 2.2 MoE"):
        pack.nodes.lora.WanExpertsLoRAPair().apply(single, "style_high.safetensors", 1.0, "style_low.safetensors")


def test_a_dit_file_in_the_lora_node_and_a_lora_in_the_dit_loader(pack, files, models_dir):
    (models_dir / "loras" / "dit.safetensors").write_bytes((models_dir / "diffusion_models" / HIGH).read_bytes())
    with pytest.raises(ValueError, match="is not a LoRA: it looks like a Wan DiT.*Load Wan DiT"):
        pack.nodes.lora.WanExpertsLoRA().apply(_moe(pack), "dit.safetensors")
    (models_dir / "diffusion_models" / "lora.safetensors").write_bytes(
        (models_dir / "loras" / "style_high.safetensors").read_bytes())
    with pytest.raises(ValueError, match="it looks like a LoRA.*Wan LoRA"):
        pack.nodes.dit.WanExpertsLoadDiT().load("lora.safetensors")
