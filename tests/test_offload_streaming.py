"""Block streaming (``wan.memory.offload``) on CPU: the streamed model computes exactly what the resident one does.

Oracle: the same model run with all its weights in place (no placement, no streaming). Streaming only copies bytes
into other buffers, so the bar is bit equality (``torch.equal``), in float32, for plain, scaled-fp8 and LoRA-patched
(on the fly) weights, and under a step cache. Transfer order, the accounting of device bytes and the automatic choice
of N are checked against hooks on the blocks and numbers worked out by hand.
"""
from __future__ import annotations

import logging

import pytest
import torch

from oracles.randomize import randomize_
from wan.memory import offload
from wan.cache.base import StepCache
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.errors import InputError
from wan.memory.place import residency
from wan.memory.swap import slots_of, unique_tensors
from wan.memory.offload import BlockStream, auto_offload_blocks, held_back, set_block_streaming
from wan.weights.ops import FP8_DTYPES, Linear
from wan.weights.patches import LowRank
from wan.weights.patching import PatchSet, patched
from wan.quant import SCALED_FP8

CFG = WanDiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=4, text_dim=32, freq_dim=32, text_len=16)


def tiny_model(seed: int = 0) -> WanDiT:
    return randomize_(WanDiT(CFG), std=0.1, seed=seed).requires_grad_(False).eval()


def model_inputs(batch: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, 2, 4, 4, generator=g)
    t = torch.tensor([700.0, 300.0][:batch])
    return x, t, torch.randn(batch, 16, 32, generator=g)


def streaming(model: WanDiT, offload_blocks) -> WanDiT:
    """Turn streaming on and place the model on the CPU as the sampler's placement would place it on a GPU."""
    set_block_streaming(model, offload_blocks)
    residency(model).load("cpu", exclude=held_back(model))
    return model


def fp8_scaled(model: WanDiT) -> WanDiT:
    """Every block Linear stored as Comfy-Org scaled fp8 (fp8 values and a float32 scale buffer)."""
    for layer in model.blocks.modules():
        if isinstance(layer, Linear):
            w = layer.weight.data
            scale = w.abs().max() / 448.0
            layer.weight = torch.nn.Parameter((w / scale).to(FP8_DTYPES[0]), requires_grad=False)
            layer.scale_weight = scale.float().reshape(())
            layer.weight_format = SCALED_FP8
    return model


@pytest.fixture
def events(monkeypatch):
    """Every transfer event of every BlockStream, in order, as (kind, block index)."""
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(BlockStream, "on_event", lambda self, kind, index: seen.append((kind, index)))
    return seen


@pytest.mark.parametrize("n", [1, 2, 4])
@torch.no_grad()
def test_streaming_is_bit_equal_and_leaves_the_weights_as_they_were(n):
    x, t, ctx = model_inputs()
    plain = tiny_model()
    ref = plain(x, t, ctx)
    model = tiny_model()
    originals = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    streaming(model, n)
    assert torch.equal(model(x, t, ctx), ref)
    assert torch.equal(model(x, t, ctx), ref)  # the second run reuses the slots
    r = residency(model)
    assert r.stream.streamed == list(range(4 - n, 4))
    r.unload()
    after = model.state_dict()
    assert all(after[k].data_ptr() == ptr and torch.equal(after[k], v) for k, (ptr, v) in originals.items())


@torch.no_grad()
def test_scaled_fp8_blocks_travel_with_their_scales():
    x, t, ctx = model_inputs()
    ref = fp8_scaled(tiny_model())(x, t, ctx)
    model = streaming(fp8_scaled(tiny_model()), 3)
    seen = []
    layer = model.blocks[3].ffn[0]
    layer.register_forward_pre_hook(lambda m, _: seen.append((m.weight.dtype, m.scale_weight.data_ptr())))
    assert torch.equal(model(x, t, ctx), ref)
    home_scale = layer.scale_weight.data_ptr()
    assert seen[0][0] in FP8_DTYPES and seen[0][1] != home_scale  # the scale came along as a device copy


@torch.no_grad()
def test_lora_patches_on_the_fly_travel_with_their_block():
    x, t, ctx = model_inputs()
    g = torch.Generator().manual_seed(9)
    patch = LowRank(torch.randn(96, 4, generator=g) * 0.1, torch.randn(4, 64, generator=g) * 0.1, 0.8)
    patches = PatchSet("lora", {"blocks.3.ffn.0.weight": (patch,)})
    ref = patched(tiny_model(), patches, merge=False)(x, t, ctx)
    model = patched(tiny_model(), patches, merge=False)
    layer = model.blocks[3].ffn[0]
    assert layer.weight_patches  # kept on the layer, applied per forward
    seen = []
    layer.register_forward_pre_hook(lambda m, _: seen.append(m.weight_patches[0].up.data_ptr()))
    streaming(model, 2)
    assert torch.equal(model(x, t, ctx), ref)
    assert seen and seen[0] != patch.up.data_ptr()  # the patch ran from the block's device copy
    assert layer.weight_patches[0] is patch  # and the layer has its own patch back


class EveryOtherStep(StepCache):
    """A step cache that reuses the cond branch on odd steps (a fixed policy, to exercise partial batches)."""

    def _decide(self, state, call, branch_state) -> bool:
        return call.branch != "cond" or call.step % 2 == 0


@torch.no_grad()
def test_streaming_under_a_step_cache_is_bit_equal():
    x, t, ctx = model_inputs(batch=2)
    outputs = []
    for model in (tiny_model(), streaming(tiny_model(), 3)):
        cache = EveryOtherStep()
        cache.begin(timesteps=[900.0, 800.0, 700.0, 600.0], experts=None)
        outputs.append([cache.forward(model, x, t * (1 - 0.1 * s), ctx, step=s, branch="cond+uncond")
                        for s in range(4)])
        assert cache.end().reused["cond"] == [1, 3]
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


@torch.no_grad()
def test_prefetch_comes_before_the_previous_block_runs_and_release_after_it(events):
    model = streaming(tiny_model(), 3)
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, _, i=i: events.append(("run", i)))
        block.register_forward_hook(lambda m, _, __, i=i: events.append(("ran", i)))
    model(*model_inputs())
    at = {e: n for n, e in enumerate(events)}
    assert at[("prefetch", 1)] < at[("run", 0)]  # the first streamed block is copied while block 0 computes
    for i in (1, 2, 3):
        assert at[("attach", i)] < at[("run", i)] < at[("ran", i)] < at[("release", i)]
        if i < 3:
            assert at[("prefetch", i + 1)] < at[("run", i)]  # block i+1 is on its way while block i runs
            assert at[("release", i)] < at[("run", i + 1)]
    assert ("prefetch", 0) not in at and ("attach", 0) not in at  # block 0 is resident


@torch.no_grad()
def test_device_bytes_of_blocks_stay_within_the_setting():
    """Hooks count, at every block, the bytes of block tensors that are not the model's own: the streamed block's
    device copy (on the CPU the resident blocks' "copies" are their own tensors; their swaps account for them)."""
    model = tiny_model()
    own = {t.data_ptr() for t in unique_tensors(slots_of(model))}
    block_bytes = [sum(t.numel() * t.element_size() for t in unique_tensors(slots_of(b))) for b in model.blocks]
    streaming(model, 2)
    samples = []

    def on_device(*_):
        tensors = unique_tensors(slots_of(model.blocks))
        samples.append(sum(t.numel() * t.element_size() for t in tensors if t.data_ptr() not in own))

    for block in model.blocks:
        block.register_forward_pre_hook(on_device)
    model(*model_inputs())
    assert samples[:2] == [0, 0] and samples[2:] == block_bytes[2:]  # one streamed block on the device at a time
    r = residency(model)
    assert [s.nbytes for s in r.swaps[1:]] == block_bytes[:2]  # the resident blocks: the first 4 - N
    stream = r.stream
    assert stream.peak_bytes <= 2 * offload.block_layout(model.blocks[3]).nbytes  # the running one + the next
    assert r.device_bytes == sum(s.nbytes for s in r.swaps) + 2 * stream.capacity


@torch.no_grad()
def test_an_interrupted_forward_gives_every_block_its_weights_back():
    model = streaming(tiny_model(), 3)
    own = {t.data_ptr() for t in unique_tensors(slots_of(model.blocks[1:]))}

    def stop(*_):
        raise KeyboardInterrupt

    handle = model.blocks[2].register_forward_pre_hook(stop)
    with pytest.raises(KeyboardInterrupt):
        model(*model_inputs())
    assert {t.data_ptr() for t in unique_tensors(slots_of(model.blocks[1:]))} == own
    handle.remove()
    assert torch.equal(model(*model_inputs()), tiny_model()(*model_inputs()))


def test_auto_choice_from_free_memory():
    gib = 1024 ** 3
    blocks = [gib] * 10
    act, reserve = 2 * gib, gib // 2
    assert auto_offload_blocks(13 * gib, blocks, act, reserve) == 0  # 12.5 GiB left >= 10 blocks: all fit
    # 8.5 GiB left: 2 streaming buffers take 2, so 6 blocks stay and 4 are streamed
    assert auto_offload_blocks(11 * gib, blocks, act, reserve) == 4
    assert auto_offload_blocks(5 * gib + reserve, blocks, act, reserve) == 9  # 3 left: buffers + 1 block
    assert auto_offload_blocks(gib, blocks, act, reserve) == 10  # nothing fits: stream everything


@torch.no_grad()
def test_auto_mode_measures_free_memory_and_says_what_it_picked(monkeypatch, caplog):
    model = tiny_model()
    block = offload.block_layout(model.blocks[0]).nbytes
    x, t, ctx = model_inputs()
    act = offload.activation_bytes(CFG, 8, torch.float32)
    monkeypatch.setattr(offload, "free_bytes", lambda device: act + offload.RESERVE + 3 * block)
    streaming(model, "auto")
    with caplog.at_level(logging.INFO, logger="wan_experts"):
        out = model(x, t, ctx)
    assert residency(model).stream.streamed == [1, 2, 3]  # room for the 2 buffers and 1 block
    assert "Block streaming (auto): 3 of 4 blocks streamed" in caplog.text
    assert torch.equal(out, tiny_model()(x, t, ctx))


def test_activation_estimate_grows_with_tokens_and_covers_the_feed_forward():
    wan14 = WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
    small, big = (offload.activation_bytes(wan14, n, torch.bfloat16) for n in (1000, 32760))
    assert big > small
    per_token = (big - small) / 31760
    assert per_token >= 4 * 5120 + 2 * 2 * 13824  # at least the float32 stream plus the two ffn hidden states


@pytest.mark.parametrize("value, expected", [(0, "off"), ("off", "off"), (None, "off"), (-1, "auto"),
                                             ("auto", "auto"), (12, "12"), ("12", "12")])
def test_setting_values(value, expected):
    setting = offload.parse_offload_blocks(value)
    assert (str(setting) if setting is not None else "off") == expected


@pytest.mark.parametrize("bad", [-3, "lots", 2.5, True])
def test_bad_setting_is_a_clear_error(bad):
    with pytest.raises(InputError, match="offload_blocks"):
        offload.parse_offload_blocks(bad)


def test_more_blocks_than_the_model_has_streams_them_all():
    model = tiny_model()
    set_block_streaming(model, 40)
    assert model.block_streaming.blocks == 4
