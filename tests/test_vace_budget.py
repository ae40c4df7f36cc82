"""The memory budget of a VACE run: the estimate covers the traced peak of the real VACE forward (meta-device trace,
``meta_trace``; at most 10% over it, as for the other DiTs) and counts the VACE blocks' weights."""
import pytest
import torch

from meta_trace import flat_attention, traced_peak
from wan.budget import estimates
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.dit.vace import VaceConfig, VaceInputs, WanVaceDiT
from wan.experts import ExpertSet

CASES = [(WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2), torch.bfloat16),
         (WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=2), torch.bfloat16)]


def meta_model(cfg, dtype, vace=True):
    with torch.device("meta"):
        model = (WanVaceDiT(cfg, VaceConfig((0, 1))) if vace else WanDiT(cfg)).to(dtype)
    model.compute_dtype = dtype
    model._attn = flat_attention
    return model


@pytest.mark.parametrize("cfg,dtype", CASES)
def test_vace_estimate_bounds_the_traced_peak(cfg, dtype):
    model = meta_model(cfg, dtype)
    c, t, h, w = 16, 21, 60, 104
    x = torch.empty(1, c, t, h, w, device="meta")
    vace = VaceInputs(torch.empty(1, 96, t, h, w, device="meta"))
    context = torch.empty(1, 512, cfg.text_dim, device="meta")
    peak = traced_peak(lambda: model(x, torch.full((1,), 500.0, device="meta"), context, vace=vace))
    estimate = estimates.estimate_sampling(ExpertSet(model), (1, c, t, h, w), "meta").parts[0][1]
    assert peak <= estimate <= 1.10 * peak, (peak, estimate)


def test_vace_blocks_are_counted_in_the_weights():
    cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2)
    plain, vace = meta_model(cfg, torch.bfloat16, False), meta_model(cfg, torch.bfloat16)
    extra = sum(p.numel() * 2 for p in vace.vace_blocks.parameters()) + vace.vace_patch_embedding.weight.numel() * 2
    assert estimates.device_need(vace) - estimates.device_need(plain) >= extra
