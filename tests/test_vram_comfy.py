"""Sharing the GPU with ComfyUI (``nodes/host.py``: ``ComfyMemory``), against a stand-in for
``comfy.model_management`` that follows the real one's contract (comfy/model_management.py, 2025):
``free_memory(bytes, device)`` unloads registered models (``partially_unload`` first, then ``detach``) until enough is
free; ``load_models_gpu([patcher])`` registers a patcher after calling its ``partially_load``.

Oracle: the bytes worked out from the modules' own tensors, and the modules' own tensors (same ``data_ptr``) back in
place after ComfyUI evicts them. The fake GPU is the ``meta`` device.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from oracles.randomize import randomize_

META = torch.device("meta")
MARGIN = 1000  # the stand-in's minimum_inference_memory()


class FakeModelManagement:
    def __init__(self):
        self.calls: list[tuple] = []
        self.loaded: list = []  # registered patchers, most recent first

    @staticmethod
    def get_torch_device():
        return META

    @staticmethod
    def unet_offload_device():
        return torch.device("cpu")

    @staticmethod
    def minimum_inference_memory():
        return MARGIN

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.calls.append(("free_memory", memory_required, device))
        for patcher in list(self.loaded):
            if patcher.load_device == device and patcher.partially_unload(device, memory_required) < memory_required:
                patcher.detach(True)
                self.loaded.remove(patcher)

    def load_models_gpu(self, models, memory_required=0, **kwargs):
        self.calls.append(("load_models_gpu", tuple(models)))
        for patcher in models:
            patcher.partially_load(patcher.load_device, memory_required)
            self.loaded.insert(0, patcher)


class FakeModelPatcher:
    """The part of comfy.model_patcher.ModelPatcher's constructor our subclass relies on."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
        self.model_size()


@pytest.fixture
def comfy(pack):
    fake = FakeModelManagement()
    previous = pack.wan.memory.place.set_memory_host(pack.nodes.host.ComfyMemory(fake, FakeModelPatcher))
    yield fake
    pack.wan.memory.place.set_memory_host(previous)


def small_model(seed=0) -> nn.Module:
    return randomize_(nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)), seed=seed)


def nbytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def pointers(model: nn.Module) -> list[int]:
    return [p.data_ptr() for p in model.parameters()]


def test_outside_comfyui_nothing_is_asked(pack):
    assert not pack.nodes.host.IN_COMFY
    assert type(pack.wan.memory.place.memory_host()) is pack.wan.memory.place.MemoryHost


def test_placing_asks_comfyui_for_the_bytes_first(pack, comfy):
    model = small_model()
    pack.wan.memory.place.place(model, META)
    assert comfy.calls == [("free_memory", nbytes(model) + MARGIN, META)]
    assert {p.device for p in model.parameters()} == {META}


def test_an_idle_model_on_the_gpu_is_registered_and_comfyui_can_evict_it(pack, comfy):
    memory = pack.wan.memory.place
    encoder, vae = small_model(0), small_model(1)
    home = pointers(encoder)
    with pack.wan.encoders.placement.running_on(encoder, META, stay=True):  # keep_loaded
        pass
    handle = memory.residency(encoder).host_handle
    assert comfy.calls[-1] == ("load_models_gpu", (handle,)) and comfy.loaded == [handle]
    assert handle.model is encoder and handle.model_size() == handle.loaded_size() == nbytes(encoder)
    assert handle.current_loaded_device() == META
    memory.place(vae, META)  # another model needs the GPU: ComfyUI evicts the idle encoder
    assert comfy.calls[-1] == ("free_memory", nbytes(vae) + MARGIN, META)
    assert not memory.placed(encoder) and pointers(encoder) == home and comfy.loaded == []
    assert handle.current_loaded_device() == torch.device("cpu") and handle.loaded_size() == 0
    with pack.wan.encoders.placement.running_on(encoder, META, stay=True):  # used again: registered again
        pass
    assert comfy.loaded == [handle] and memory.placed(encoder)


def test_a_model_in_use_is_not_evicted(pack, comfy):
    memory = pack.wan.memory.place
    encoder = small_model()
    memory.place(encoder, META)
    memory.leave(encoder, stay=True)
    memory.place(encoder, META)  # in use again (still registered)
    memory.place(small_model(1), META)  # ComfyUI tries to evict it while it computes
    assert memory.placed(encoder) and {p.device for p in encoder.parameters()} == {META}
    memory.leave(encoder, stay=True)  # idle again: handed back to ComfyUI
    assert comfy.loaded[0].model is encoder


def test_experts_kept_on_the_gpu_are_evictable(pack, comfy):
    cfg = pack.wan.dit.config.WanDiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32, freq_dim=32,
                                           text_len=16)
    high, low = (randomize_(pack.wan.dit.model.WanDiT(cfg), seed=s) for s in (0, 1))
    placement = pack.wan.sampling.placement.ExpertPlacement([high, low], META, "cpu", keep_both=True)
    placement.activate(high)
    placement.activate(low)
    placement.release()
    assert [h.model for h in comfy.loaded] == [low, high]
    pack.wan.memory.place.place(small_model(), META)
    assert comfy.loaded == [] and not pack.wan.memory.place.placed(high) and not pack.wan.memory.place.placed(low)


def test_a_streaming_plan_asks_for_its_resident_blocks_buffers_and_activations(pack, comfy):
    offload, memory = pack.wan.memory.offload, pack.wan.memory.place
    cfg = pack.wan.dit.config.WanDiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=4, text_dim=32, freq_dim=32,
                                           text_len=16)
    model = randomize_(pack.wan.dit.model.WanDiT(cfg))
    offload.set_block_streaming(model, 3)
    memory.place(model, META, exclude=offload.held_back(model))
    comfy.calls.clear()
    stream = offload.plan_stream(model, tokens=100)
    block = offload.block_layout(model.blocks[0]).nbytes
    expected = block + 2 * block + offload.activation_bytes(cfg, 100, torch.float32) + MARGIN
    assert comfy.calls == [("free_memory", expected, META)]
    assert stream.streamed == [1, 2, 3]
