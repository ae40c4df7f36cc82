"""The one patched-weight mechanism (``weight = dequantise(stored) + patches``) and patched model copies.

Oracle: the official Wan ``WanModel`` (PyPI ``wan22``) whose state dict was patched by hand (plain
``W + s · up @ down`` / ``W + s · diff`` in float32), then run as is. Tolerance: the project's parity bar
(max|ours - ref| <= 1e-4 · max|ref| + 1e-5) in float32; bit equality where the claim is identity.
"""
import pytest
import torch

import wan
from tiny_dit import assert_close, inputs, official_dit, save_safetensors, state_dict_of
from wan.errors import InputError
from wan.weights.ops import FP8_DTYPES, Linear
from wan.weights.patches import Decomposed, Full, LowRank
from wan.weights.patching import PatchSet, merged_weight, patch_root, patched, unpatched

Q = "blocks.0.self_attn.q.weight"
FFN = "blocks.1.ffn.0.weight"
MOD = "blocks.0.modulation"


def _low_rank(shape, rank=4, scale=0.7, seed=3):
    g = torch.Generator().manual_seed(seed)
    return LowRank(torch.randn(shape[0], rank, generator=g) * 0.1, torch.randn(rank, shape[1], generator=g) * 0.1,
                   scale)


def _by_hand(sd, patches):
    out = dict(sd)
    for name, ps in patches.items():
        w = out[name].float()
        for p in ps:
            w = w + (p.scale * (p.up.float() @ p.down.float()) if isinstance(p, LowRank)
                     else p.scale * p.diff.float().reshape(w.shape))
        out[name] = w
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = official_dit("t2v")
    sd = state_dict_of(ref)
    ours = wan.load_dit(save_safetensors(sd, tmp_path_factory.mktemp("dit") / "dit.safetensors"))
    return ref, sd, ours


def _official(ref, sd, x, t, ctx):
    ref.load_state_dict(sd)
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    with torch.no_grad():
        return torch.stack(ref(list(x), t=t[:, None].expand(-1, seq_len), context=list(ctx), seq_len=seq_len))


def test_merged_patches_match_hand_patched_official_model(pair):
    ref, sd, ours = pair
    patches = {Q: (_low_rank((256, 256)),), FFN: (_low_rank((384, 256), rank=2, seed=5),),
               MOD: (Full(torch.randn(1, 6, 256) * 0.05, 0.5),)}
    model = patched(ours, PatchSet("a", patches))
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        out = model(x, t, ctx)
    assert_close(out, _official(ref, _by_hand(sd, patches), x, t, ctx))
    assert model.get_submodule("blocks.0.self_attn.q").weight_patches == ()  # float weights are merged


def test_caller_model_is_untouched_and_untouched_tensors_are_shared(pair):
    _, _, ours = pair
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    model = patched(ours, PatchSet("a", {Q: (_low_rank((256, 256)),)}))
    after = ours.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.blocks[1].ffn[0].weight.data_ptr() == ours.blocks[1].ffn[0].weight.data_ptr()
    assert model.blocks[0].self_attn.q.weight.data_ptr() != ours.blocks[0].self_attn.q.weight.data_ptr()
    model.double()  # moving the copy never moves the caller's model
    assert ours.blocks[1].ffn[0].weight.dtype == torch.float32
    assert patch_root(model) is ours and "patch_root" not in dict(model.named_children())


def test_unmerged_float_patches_equal_merged_bit_for_bit(pair, monkeypatch):
    _, _, ours = pair
    monkeypatch.setattr(Linear, "side_path", "never")
    s = PatchSet("a", {Q: (_low_rank((256, 256)),), FFN: (_low_rank((384, 256), seed=9), _low_rank((384, 256)))})
    merged, live = patched(ours, s), patched(ours, s, merge=False)
    assert len(live.blocks[1].ffn[0].weight_patches) == 2
    assert torch.equal(merged_weight(live.blocks[1].ffn[0]), merged.blocks[1].ffn[0].weight)
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        assert torch.equal(live(x, t, ctx), merged(x, t, ctx))


def test_side_path_equals_rebuilt_weight(pair, monkeypatch):
    _, _, ours = pair
    live = patched(ours, PatchSet("a", {Q: (_low_rank((256, 256)),)}), merge=False)
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        monkeypatch.setattr(Linear, "side_path", "never")
        rebuilt = live(x, t, ctx)
        monkeypatch.setattr(Linear, "side_path", "always")
        side = live(x, t, ctx)
    assert_close(side, rebuilt)


def test_replacing_a_set_never_stacks_and_removing_restores_the_root(pair):
    _, _, ours = pair
    x, t, ctx, _ = inputs()
    once = patched(ours, PatchSet("lora", {Q: (_low_rank((256, 256), scale=0.3),)}))
    again = patched(patched(ours, PatchSet("lora", {Q: (_low_rank((256, 256), scale=0.9),)})),
                    PatchSet("lora", {Q: (_low_rank((256, 256), scale=0.3),)}))
    with torch.no_grad():
        assert torch.equal(once(x, t, ctx), again(x, t, ctx))
        assert unpatched(once, "lora") is ours
        assert torch.equal(patched(ours, PatchSet("empty", {}))(x, t, ctx), ours(x, t, ctx))


def test_two_sets_stack_in_float32(pair):
    ref, sd, ours = pair
    a, b = {Q: (_low_rank((256, 256)),)}, {Q: (_low_rank((256, 256), seed=11, scale=-0.4),)}
    model = patched(patched(ours, PatchSet("a", a)), PatchSet("b", b))
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        assert_close(model(x, t, ctx), _official(ref, _by_hand(sd, {Q: a[Q] + b[Q]}), x, t, ctx))


@pytest.mark.skipif(not FP8_DTYPES, reason="this torch build has no fp8")
def test_scaled_fp8_weight_stays_fp8_and_takes_the_patch_after_its_scale(tmp_path):
    """Reference: the dequantised weight (fp8 × scale, the order ComfyUI once got wrong) plus the exact delta."""
    ref = official_dit("t2v")
    sd = state_dict_of(ref)
    fp8 = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.dim() == 2 and ".norm" not in k:
            scale = v.abs().max() / 448.0
            fp8[k] = (v / scale).to(torch.float8_e4m3fn)
            fp8[k[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            fp8[k] = v
    fp8["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    model = wan.load_dit(save_safetensors(fp8, tmp_path / "fp8.safetensors"), dtype="fp32")
    patch = _low_rank((256, 256))
    live = patched(model, PatchSet("a", {Q: (patch,)}))
    layer = live.blocks[0].self_attn.q
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight_patches == (patch,)
    dequantised = layer.weight.float() * layer.scale_weight
    expected = dequantised + patch.scale * (patch.up @ patch.down)
    assert torch.equal(merged_weight(layer, torch.float32), expected)
    deq_sd = {k: (v.float() * fp8[k[: -len("weight")] + "scale_weight"] if v.dtype == torch.float8_e4m3fn else v)
              for k, v in fp8.items() if not k.endswith("scale_weight") and k != "scaled_fp8"}
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        assert_close(live(x, t, ctx), _official(ref, _by_hand(deq_sd, {Q: (patch,)}), x, t, ctx))


def test_patches_move_with_the_layer(pair):
    _, _, ours = pair
    live = patched(ours, PatchSet("a", {Q: (_low_rank((256, 256)),)}), merge=False)
    live.double()
    patch = live.blocks[0].self_attn.q.weight_patches[0]
    assert patch.up.dtype == torch.float64 and patch.down.dtype == torch.float64


def test_dora_rescales_rows_to_the_magnitude():
    """Hand check of the DoRA rule: W' = m · (W + ΔW) / ‖W + ΔW‖ (row norms), blended by the strength."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g)
    inner = _low_rank((6, 5), rank=2)
    m = torch.rand(6, generator=g) + 0.5
    v = w + inner.scale * inner.up @ inner.down
    expected = v * (m[:, None] / v.norm(dim=1, keepdim=True))
    assert_close(Decomposed(inner, m, 1.0).apply(w), expected, rel=1e-6)
    assert_close(Decomposed(inner, m, 0.5).apply(w), w + 0.5 * (expected - w), rel=1e-6)


def test_a_target_the_model_lacks_is_refused(pair):
    _, _, ours = pair
    with pytest.raises(InputError, match="not part"):
        patched(ours, PatchSet("a", {"blocks.9.self_attn.q.weight": (_low_rank((256, 256)),)}))
