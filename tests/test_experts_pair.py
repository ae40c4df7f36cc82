"""A Wan 2.2 A14B pair is two different experts of one task; each way of getting it wrong has its own message."""
import math
import shutil

import pytest
import torch

import wan
from tiny_dit import official_dit, save_safetensors, state_dict_of
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.errors import InputError
from wan.experts import ExpertSet
from wan.variants import VARIANTS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("experts")
    high = save_safetensors(state_dict_of(official_dit("t2v", seed=1)), d / "wan2.2_t2v_high_noise_14B.safetensors")
    low = save_safetensors(state_dict_of(official_dit("t2v", seed=2)), d / "wan2.2_t2v_low_noise_14B.safetensors")
    return d, high, low


def test_a_proper_pair_loads(files):
    _, high, low = files
    pair = wan.load_moe(high, low)
    assert pair.is_moe and pair.boundary == 0.875


@pytest.mark.parametrize("second,match", [
    (None, r"the same file 'wan2.2_t2v_high_noise_14B.safetensors' was given as both experts"),
    ("copy_high_noise.safetensors", r"both files are high-noise experts by their names.*the low-noise input needs "
                                    r"the low_noise file"),
    ("wan2.2_twin_low_noise.safetensors", "hold the same weights.*the same expert was given twice"),
])
def test_one_expert_twice_says_what_is_wrong_and_not_swapped(files, second, match):
    d, high, _ = files
    other = high if second is None else shutil.copy(high, d / second)
    with pytest.raises(InputError, match=match) as info:
        wan.load_moe(high, other)
    assert "swapped" not in str(info.value)


def test_swapped_and_misplaced(files):
    d, high, low = files
    with pytest.raises(InputError, match="swapped"):
        wan.load_moe(low, high)
    plain = shutil.copy(high, d / "expert_b.safetensors")
    with pytest.raises(InputError, match=r"'wan2.2_t2v_low_noise_14B.safetensors' was given as the high-noise "
                                         r"expert, but its name says it is the low-noise one"):
        wan.load_moe(low, plain)


def test_wan21_files_are_not_a_pair(files):
    d, high, low = files
    a = shutil.copy(high, d / "wan2.1_t2v_14B_fp16.safetensors")
    b = shutil.copy(low, d / "wan2.1_t2v_14B_bf16.safetensors")
    with pytest.raises(InputError, match=r"'wan2.1_t2v_14B_fp16.safetensors' does not look like a Wan 2.2 A14B "
                                         r"expert.*load it with Load Wan DiT"):
        wan.load_moe(a, b)
    with pytest.raises(InputError, match="the same file"):
        wan.load_moe(a, a)


def test_engine_pairs_of_other_models():
    """ExpertSet itself: models that are no A14B experts (by width or variant) and one model twice."""
    def meta(dim, variant, role):
        with torch.device("meta"):
            return WanDiT(WanDiTConfig(dim=dim, ffn_dim=dim, num_heads=dim // 128, num_layers=1),
                          VARIANTS[variant], role)

    with pytest.raises(InputError, match="is Wan 2.1 T2V-1.3B, not a Wan 2.2 A14B expert"):
        ExpertSet(meta(1536, "wan22_t2v_a14b", "high"), meta(1536, "wan22_t2v_a14b", "low"))
    with pytest.raises(InputError, match="is wan21_t2v_14b, not a Wan 2.2 A14B expert"):
        ExpertSet(meta(256, "wan21_t2v_14b", "single"), meta(256, "wan21_t2v_14b", "single"))
    one = meta(256, "wan22_t2v_a14b", "high")
    with pytest.raises(InputError, match="the same model was given as both"):
        ExpertSet(one, one)
    with pytest.raises(InputError, match="boundary nan is out of range"):
        ExpertSet(one, meta(256, "wan22_t2v_a14b", "low"), boundary=math.nan)


def test_sample_takes_a_single_dit_and_refuses_other_things(files):
    from wan.sampling import SamplerSettings, make_noise

    _, high, _ = files
    model = wan.load_dit(high, role="single")
    text = wan.TextEmbeds(torch.zeros(1, 512, 32), torch.zeros(1, 512, 32))
    shape = (1, 16, 1, 4, 4)
    out = wan.sample(model, torch.zeros(shape), text, SamplerSettings(1, 5.0), noise=make_noise(shape, 0))
    assert out.latents.shape == shape and out.experts == ["single"]
    with pytest.raises(InputError, match="the model must be a Wan DiT"):
        wan.sample("model.safetensors", torch.zeros(shape), text, SamplerSettings(1, 5.0), noise=make_noise(shape, 0))
    with pytest.raises(InputError, match="settings must be a SamplerSettings"):
        wan.sample(model, torch.zeros(shape), text, {"steps": 1}, noise=make_noise(shape, 0))
    with pytest.raises(InputError, match="the positive prompt must be text"):
        wan.encode_prompts(None, None)
    assert {wan.TextEmbeds, wan.ImageCond, wan.ClipEmbeds} and wan.InputError is InputError
