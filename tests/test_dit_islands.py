"""Float32 islands: the layers the official code runs in float32 are loaded in float32, from the file's own values,
so that a bf16 forward converts no weight.

Oracle for which layers: the official ``wan22`` model.py runs ``time_embedding``, ``time_projection``, every
block's ``modulation`` and the head (``head.modulation``, ``head.head``) under ``autocast(float32)``, and its
``WanLayerNorm`` (``norm3``) on ``x.float()``; the 2.1 image projection's LayerNorms and FLF2V ``emb_pos`` are added
to float32 inputs. Numerics: the bf16 parity tests (test_dit_parity.py, test_dit_attention.py) still hold.
"""
import pytest
import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

import wan
from tiny_dit import LAYERS, inputs, official_dit, save_safetensors, state_dict_of
from wan.dit.islands import is_float32_island
from wan.weights import ops

OFFICIAL_FLOAT32 = {"time_embedding.0.weight", "time_embedding.0.bias", "time_embedding.2.weight",
                    "time_embedding.2.bias", "time_projection.1.weight", "time_projection.1.bias",
                    "head.modulation", "head.head.weight", "head.head.bias"} | {
    f"blocks.{i}.{name}" for i in range(LAYERS) for name in ("modulation", "norm3.weight", "norm3.bias")}


@pytest.fixture(scope="module")
def weights():
    return state_dict_of(official_dit("t2v"))


def test_islands_are_the_layers_official_runs_in_float32(weights, tmp_path):
    model = wan.load_dit(save_safetensors(weights, tmp_path / "dit.safetensors"), dtype="bf16")
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {name for name, dtype in dtypes.items() if dtype == torch.float32} == OFFICIAL_FLOAT32
    assert {dtype for name, dtype in dtypes.items() if name not in OFFICIAL_FLOAT32} == {torch.bfloat16}
    assert all(is_float32_island(n) for n in ("img_emb.proj.0.weight", "img_emb.proj.4.bias", "img_emb.emb_pos"))
    assert not any(is_float32_island(n) for n in ("img_emb.proj.1.weight", "blocks.0.norm_q.weight",
                                                  "text_embedding.0.weight", "blocks.3.ffn.0.weight"))


def test_islands_keep_the_file_precision(weights, tmp_path):
    """A float32 file computed in bf16: islands hold the file's exact float32 values, not bf16-rounded ones."""
    model = wan.load_dit(save_safetensors(weights, tmp_path / "dit.safetensors"), dtype="bf16")
    params = dict(model.named_parameters())
    for name in OFFICIAL_FLOAT32:
        assert torch.equal(params[name], weights[name]), name


class _ConversionLog(TorchDispatchMode):
    """Records every dtype/device copy (``aten._to_copy``) whose source shares storage with a model parameter."""

    def __init__(self, model):
        super().__init__()
        self.storages = {p.untyped_storage().data_ptr(): name for name, p in model.named_parameters()}
        self.converted = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        source = args[0] if args else None
        if func is torch.ops.aten._to_copy.default and isinstance(source, torch.Tensor):
            name = self.storages.get(source.untyped_storage().data_ptr())
            if name is not None:
                self.converted.append(name)
        return func(*args, **(kwargs or {}))


def test_a_bf16_forward_converts_no_weight(weights, tmp_path, monkeypatch):
    """(Products as on a CPU or GPU with native bf16 matrix products; elsewhere ``wan.weights.ops.linear`` widens each
    product's operands to float32 on purpose, test_half_products_cpu.py.)"""
    monkeypatch.setattr(ops, "_NATIVE", {torch.bfloat16: True, torch.float16: True})
    bf16_file = {k: v.to(torch.bfloat16) for k, v in weights.items()}
    model = wan.load_dit(save_safetensors(bf16_file, tmp_path / "dit_bf16.safetensors"))
    assert model.compute_dtype == torch.bfloat16
    x, t, ctx, _ = inputs(16)
    with torch.no_grad(), _ConversionLog(model) as log:
        model(x, t, ctx)
    assert log.converted == []


def test_compact_island_weights_stay_compact(weights, tmp_path):
    """Comfy scaled fp8: an island Linear weight stays fp8 with its scale (dequantised per forward like every compact
    layer); the float-stored islands of the same file are float32."""
    f8 = torch.float8_e4m3fn
    sd = dict(weights)
    for key in ("time_projection.1.weight", "blocks.0.ffn.0.weight"):
        scale = weights[key].abs().max() / 448.0
        sd[key] = (weights[key] / scale).to(f8)
        sd[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
    path = tmp_path / "dit_fp8_scaled.safetensors"
    save_file({"scaled_fp8": torch.empty(0, dtype=f8), **{k: v.contiguous() for k, v in sd.items()}}, str(path))
    model = wan.load_dit(path, dtype="bf16")
    layer = model.time_projection[1]
    assert layer.weight.dtype == f8 and layer.weight_format is not None
    assert torch.equal(layer.scale_weight.reshape(1), sd["time_projection.1.scale_weight"])  # one scale, kept as a scalar
    assert model.time_projection[1].bias.dtype == model.blocks[0].modulation.dtype == torch.float32
    assert model.blocks[0].ffn[0].weight.dtype == f8
