"""Applying LoRAs: identity at strength 0 and on removal, replacement instead of stacking, several LoRAs, per
expert, the caller's model untouched, the mismatch rules and bad files.

Oracles: bit equality with the base model where the claim is identity; the merged weights by hand
(W + s · (α/r) · up @ down, ``lora_schemes.merged_by_hand``) where LoRAs stack.
"""
import logging
import pickle

import pytest
import torch

import wan
from lora_schemes import BLOCK_LINEARS, merged_by_hand, random_lora, write
from tiny_dit import LAYERS, assert_close, inputs, official_dit, save_safetensors, state_dict_of
from wan.errors import CheckpointError, InputError
from wan.lora import load_lora
from wan.weights.patching import unpatched

MODULES = [f"blocks.{i}.{m}" for i in range(LAYERS) for m in BLOCK_LINEARS]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    sd = state_dict_of(official_dit("t2v"))
    path = save_safetensors(sd, folder / "dit.safetensors")
    shapes = {k: v.shape for k, v in sd.items()}
    loras = [write("comfy", random_lora(shapes, MODULES, seed=s), folder / f"l{s}.safetensors") for s in (1, 2)]
    low = save_safetensors(state_dict_of(official_dit("t2v", seed=1)), folder / "dit_low.safetensors")
    return path, sd, shapes, loras, low


@pytest.fixture(scope="module")
def experts(base):
    """Two different experts (a pair of one file twice is refused as the same expert given twice)."""
    return wan.ExpertSet(wan.load_dit(base[0], role="high"), wan.load_dit(base[4], role="low"))


def _out(model):
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        return model(x, t, ctx)


def test_strength_zero_and_removal_are_bit_identical(experts, base):
    lora = base[3][0]
    zero = wan.apply_lora(experts, lora, 0.0)
    assert zero.high is experts.high and zero.low is experts.low
    applied = wan.apply_lora(experts, lora, 0.8)
    removed = wan.apply_lora(applied, lora, 0.0)
    assert removed.high is experts.high and torch.equal(_out(removed.low), _out(experts.low))
    assert unpatched(applied.high, load_lora(lora).identity) is experts.high


def test_reapplying_replaces_never_stacks(experts, base):
    lora = base[3][0]
    twice = wan.apply_lora(wan.apply_lora(experts, lora, 1.5), lora, 0.4)
    once = wan.apply_lora(experts, lora, 0.4)
    assert torch.equal(_out(twice.high), _out(once.high))


def test_two_loras_stack_each_with_its_strength(experts, base):
    _, sd, shapes, (a, b), _ = base
    model = wan.apply_lora(wan.apply_lora(experts, a, 0.7), b, -0.3).high
    expected = merged_by_hand(merged_by_hand(sd, random_lora(shapes, MODULES, seed=1), 0.7),
                              random_lora(shapes, MODULES, seed=2), -0.3)
    for m in MODULES:
        assert_close(model.get_parameter(f"{m}.weight"), expected[f"{m}.weight"], rel=1e-6, abs_=0)


def test_per_expert_and_the_caller_model_untouched(experts, base):
    before = {r: _out(getattr(experts, r)) for r in ("high", "low")}
    high_only = wan.apply_lora(experts, base[3][0], 1.0, expert="high")
    assert high_only.low is experts.low and high_only.high is not experts.high
    assert high_only.boundary == experts.boundary
    pair = wan.apply_lora(high_only, base[3][1], 0.5, expert="low")
    assert pair.high is high_only.high and not torch.equal(_out(pair.low), before["low"])
    for r in ("high", "low"):
        assert torch.equal(_out(getattr(experts, r)), before[r])


def test_single_model_takes_both_only(base):
    single = wan.ExpertSet(wan.load_dit(base[0]))
    with pytest.raises(InputError, match="single DiT"):
        wan.apply_lora(single, base[3][0], expert="low")


# -- mismatches ----------------------------------------------------------------------------------------------------
def test_i2v_lora_on_t2v_applies_what_fits_and_names_the_skipped(experts, base, tmp_path, caplog):
    _, sd, shapes, _, _ = base
    img = {f"blocks.{i}.cross_attn.{n}.weight": shapes["blocks.0.cross_attn.k.weight"]
           for i in range(LAYERS) for n in ("k_img", "v_img")}
    lora = random_lora({**shapes, **img}, MODULES + [k[: -len(".weight")] for k in img])
    tensors_path = write("comfy", lora, tmp_path / "i2v.safetensors")
    with caplog.at_level(logging.WARNING, "wan_experts"):
        model = wan.apply_lora(experts, tensors_path, 0.6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "k_img" in warnings[0] and "blocks.0.cross_attn.k_img.weight" in warnings[0]
    only_fitting = random_lora(shapes, MODULES)  # same seed: the same tensors for the layers that fit
    expected = merged_by_hand(sd, only_fitting, 0.6)
    assert_close(model.high.get_parameter("blocks.1.ffn.2.weight"), expected["blocks.1.ffn.2.weight"], rel=1e-6,
                 abs_=0)


def test_lora_for_another_width_is_refused_with_both_widths(experts, tmp_path):
    shapes = {f"{m}.weight": (1536 if "ffn" not in m else 8960, 1536) for m in MODULES}
    shapes["blocks.0.ffn.2.weight"] = shapes["blocks.1.ffn.2.weight"] = (1536, 8960)
    path = write("kohya", random_lora(shapes, MODULES, rank=2), tmp_path / "wan13b.safetensors")
    with pytest.raises(InputError, match=r"width 1536 \(Wan 2.1 1.3B\).*width 256"):
        wan.apply_lora(experts, path)


def test_nothing_matching_is_refused_naming_the_scheme(experts, tmp_path):
    from safetensors.torch import save_file

    keys = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 2)}
    save_file(keys, str(tmp_path / "sdxl.safetensors"))
    with pytest.raises(CheckpointError, match="kohya / musubi-tuner LoRA for another model"):
        wan.apply_lora(experts, tmp_path / "sdxl.safetensors")


def test_unmatched_keys_are_listed(experts, base, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(base[3][0]))
    tensors.update({f"diffusion_model.extra_{i}.lora_down.weight": torch.zeros(2, 2) for i in range(6)})
    save_file(tensors, str(tmp_path / "extra.safetensors"))
    with caplog.at_level(logging.WARNING, "wan_experts"):
        wan.apply_lora(experts, tmp_path / "extra.safetensors")
    assert any("6 keys (" in r.getMessage() and "... and 2 more" in r.getMessage() for r in caplog.records)


# -- bad files -----------------------------------------------------------------------------------------------------
def test_a_dit_given_as_lora_is_refused(experts, base):
    with pytest.raises(CheckpointError, match="not a LoRA: it looks like a Wan DiT.*Load Wan DiT"):
        wan.apply_lora(experts, base[0])


def test_a_lora_given_to_the_dit_loader_is_refused(base):
    with pytest.raises(CheckpointError, match="it looks like a LoRA.*Wan LoRA"):
        wan.load_dit(base[3][0])


def test_truncated_and_pickled_files_are_refused(experts, base, tmp_path):
    data = base[3][0].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        wan.apply_lora(experts, tmp_path / "cut.safetensors")

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"diffusion_model.x.lora_up.weight": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="weights-only"):
        wan.apply_lora(experts, tmp_path / "evil.ckpt")


def test_a_weights_only_pth_lora_loads(experts, base, tmp_path):
    from safetensors.torch import load_file

    torch.save(load_file(str(base[3][0])), tmp_path / "l.pth")
    a, b = wan.apply_lora(experts, tmp_path / "l.pth", 0.5), wan.apply_lora(experts, base[3][0], 0.5)
    assert torch.equal(a.high.blocks[0].self_attn.q.weight, b.high.blocks[0].self_attn.q.weight)


def test_an_incomplete_pair_is_refused_and_nothing_changes(experts, base, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(base[3][0]))
    del tensors["diffusion_model.blocks.1.ffn.2.lora_up.weight"]
    save_file(tensors, str(tmp_path / "half.safetensors"))
    before = _out(experts.high)
    with pytest.raises(CheckpointError, match="one half.*blocks.1.ffn.2.weight"):
        wan.apply_lora(experts, tmp_path / "half.safetensors")
    assert torch.equal(_out(experts.high), before)
