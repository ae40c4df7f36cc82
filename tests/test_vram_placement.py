"""Placing models on the compute device by swapping references (``wan.memory.place``): the offload copy is never touched.

Oracle: the process's own memory map (``/proc/self/maps``): a weight read from a safetensors file lies inside a
mapping of that file; after any number of trips to the device and back it must be the very same tensor (same
``data_ptr``, same values) inside that mapping, not an anonymous RAM copy (what ``module.to("cpu")`` would leave).
The "device" is ``meta`` here: copies to it cost nothing and are clearly not the originals.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import wan
from tiny_dit import official_dit, save_safetensors, state_dict_of
from wan.encoders.placement import running_on
from wan.memory.place import placed, residency
from wan.memory.offload import set_block_streaming
from wan.weights.patches import LowRank
from wan.weights.patching import PatchSet, patched
from wan.sampling.placement import ExpertPlacement


def file_mappings(path: Path) -> list[tuple[int, int]]:
    name = str(path.resolve())
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(name):
            lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
            out.append((lo, hi))
    return out


def pointers(model: nn.Module) -> dict[str, int]:
    return {k: v.data_ptr() for k, v in model.state_dict().items()}


def devices(model: nn.Module) -> set[str]:
    return {p.device.type for p in model.parameters()}


@pytest.fixture(scope="module")
def expert_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("experts")
    return [save_safetensors(state_dict_of(official_dit("t2v", seed=s)), folder / f"{name}.safetensors")
            for s, name in ((0, "high"), (1, "low"))]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_experts_trading_places_keep_their_memory_mapped_weights(expert_files):
    high, low = (wan.load_dit(p, role=r) for p, r in zip(expert_files, ("high", "low")))
    before = [pointers(high), pointers(low)]
    values = [{k: v.clone() for k, v in m.state_dict().items()} for m in (high, low)]
    maps = [file_mappings(p) for p in expert_files]
    assert all(any(lo <= ptr < hi for lo, hi in maps[0]) for ptr in before[0].values())  # memory-mapped to begin
    placement = ExpertPlacement([high, low], "meta", "cpu")
    for _ in range(2):  # high, low, high, low: every switch sends one expert home and the other to the device
        assert placement.activate(high) is high
        assert devices(high) == {"meta"} and devices(low) == {"cpu"} and pointers(low) == before[1]
        placement.activate(low)
        assert devices(low) == {"meta"} and pointers(high) == before[0]
    placement.release()
    for model, ptrs, vals, mapped in zip((high, low), before, values, maps):
        assert pointers(model) == ptrs
        assert all(any(lo <= p < hi for lo, hi in mapped) for p in ptrs.values())
        assert all(torch.equal(v, vals[k]) for k, v in model.state_dict().items())
    assert not placed(high) and not placed(low)


def test_keep_both_leaves_both_experts_on_the_device(expert_files):
    high, low = (wan.load_dit(p) for p in expert_files)
    placement = ExpertPlacement([high, low], "meta", "cpu", keep_both=True)
    placement.activate(high)
    placement.activate(low)
    placement.release()
    assert devices(high) == devices(low) == {"meta"} and placed(high) and placed(low)
    assert not residency(high).in_use  # idle: a host may evict it
    residency(high).evict()
    assert devices(high) == {"cpu"}


def test_a_patched_copy_travels_alone(expert_files):
    root = wan.load_dit(expert_files[0])
    g = torch.Generator().manual_seed(0)
    lora = LowRank(torch.randn(256, 2, generator=g), torch.randn(2, 256, generator=g), 0.5)
    clone = patched(root, PatchSet("l", {"blocks.0.self_attn.q.weight": (lora,)}), merge=False)
    ExpertPlacement([clone], "meta", "cpu").activate(clone)
    assert devices(clone) == {"meta"} and devices(root) == {"cpu"}
    assert clone.blocks[0].self_attn.q.weight_patches[0].up.device.type == "meta"  # its patches came along
    assert not placed(root)


def test_a_streaming_model_is_placed_without_its_blocks(expert_files):
    model = wan.load_dit(expert_files[0], offload_blocks=1)
    ExpertPlacement([model], "meta", "cpu").activate(model)
    assert devices(model.blocks) == {"cpu"}
    assert devices(model.head) == devices(model.patch_embedding) == devices(model.text_embedding) == {"meta"}
    set_block_streaming(model, 0)
    assert model.block_streaming is None


def test_encoders_run_on_the_device_and_come_back_or_stay():
    encoder = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    home = pointers(encoder)
    with running_on(encoder, "meta", stay=False) as device:
        assert device == torch.device("meta") and devices(encoder) == {"meta"}
    assert pointers(encoder) == home
    with running_on(encoder, "meta", stay=True):
        first = encoder[0].weight
    with running_on(encoder, None, stay=True):  # stayed: no new copy
        assert encoder[0].weight is first and residency(encoder).in_use
    assert placed(encoder) and not residency(encoder).in_use
    with running_on(encoder, "cpu", stay=False):  # asked to run at home: the device copy is dropped
        assert pointers(encoder) == home


def test_patching_a_model_kept_on_the_device_builds_on_its_own_tensors(expert_files):
    root = wan.load_dit(expert_files[0])
    home = pointers(root)
    placement = ExpertPlacement([root], "meta", "cpu", keep_both=True)
    placement.activate(root)
    placement.release()  # kept on the device, idle
    g = torch.Generator().manual_seed(0)
    lora = LowRank(torch.randn(256, 2, generator=g), torch.randn(2, 256, generator=g), 0.5)
    clone = patched(root, PatchSet("l", {"blocks.0.self_attn.q.weight": (lora,)}))  # merged
    assert not placed(root) and pointers(root) == home
    assert devices(clone) == {"cpu"} and clone.blocks[1].ffn[0].weight.data_ptr() == home["blocks.1.ffn.0.weight"]
