"""Extending a clip (wan/sampling/extend.py) with tiny random models, and colour matching (wan/sampling/color.py).

Oracles: the VAE round trip of the conditioning frames computed directly (decode(encode(tail))): the new segment's
first frames must equal it (tolerance 1e-4: the held latents land within float rounding of the encoded ones) and so
lie within the round-trip error of the clip's last frames; the cross-fade and the mask by hand; Lab values of the
sRGB primaries as published (Lindbloom, D65; tolerance 0.01); colour statistics measured before and after.
"""
import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from oracles.randomize import randomize_
from test_cache_tools import TEXT_DIM, tiny_experts
from wan.sampling.color import lab_stats, lab_to_srgb, match_colors, srgb_to_lab, stats_jump
from wan.conditioning import TextEmbeds
from wan.runner.demo import tiny_vae
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.errors import InputError
from wan.experts import ExpertSet
from wan.sampling.extend import ExtendSettings, extend, extension_condition, join, tail_pixels
from wan.sampling import SamplerSettings
from wan.vae.vae import WanVAE
from wan.variants import VARIANTS

SIZE = 32  # pixels
MODELS = {"i2v_a14b": ("wan22_i2v_a14b", 36, "2.1"), "ti2v": ("wan22_ti2v_5b", 48, "2.2")}


class FakeClip:
    """Stands in for the CLIP vision encoder: the extension only asks it for features of one frame."""

    def __init__(self):
        self.seen = []

    def encode(self, image):
        self.seen.append(image)
        return torch.full((image.shape[0], 257, 32), float(image.mean()))


@pytest.fixture(scope="module")
def vaes():
    return {v: WanVAE(tiny_vae(v), torch.float32) for v in ("2.1", "2.2")}


def clip_frames(n=9, seed=0):
    """A smooth moving gradient: frames [n, H, W, 3] in 0..1."""
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(3, generator=g)
    return torch.stack([torch.stack([(0.5 + 0.4 * torch.sin(6 * x + 3 * y + f / 3 + 6 * p)) for p in phase], -1)
                        for f in range(n)])


def text():
    g = torch.Generator().manual_seed(5)
    return TextEmbeds(torch.randn(1, 9, TEXT_DIM, generator=g), torch.randn(1, 9, TEXT_DIM, generator=g))


def run_extension(kind, vaes, video, color="off", overlap=5, frames=9):
    variant, in_dim, vae_version = MODELS[kind]
    experts = tiny_experts(variant, in_dim=in_dim)
    ext = ExtendSettings(frames, overlap, color)
    return extend(experts, vaes[vae_version], video, text(), SamplerSettings(4, 5.0, cfg_high=4.0, cfg_low=3.5),
                  ext, seed=1)


@pytest.mark.parametrize("kind", ["i2v_a14b", "ti2v"])
def test_segment_starts_with_the_conditioning_frames(kind, vaes):
    """Oracle: decode(encode(last 5 frames)); the segment's first 5 frames equal it, hence lie within the VAE
    round-trip error of the clip's own last frames."""
    video = clip_frames()
    result = run_extension(kind, vaes, video)
    vae = vaes[MODELS[kind][2]]
    tail = tail_pixels(video, 5)
    round_trip = ((vae.decode(vae.encode(tail))[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    head = result.segment[:5]
    assert (head - round_trip).abs().max() <= 1e-4
    vae_error = (round_trip - video[-5:]).abs().max()
    assert (head - video[-5:]).abs().max() <= vae_error + 1e-4
    assert result.segment.shape == (9, SIZE, SIZE, 3) and result.video.shape == (9 + 9 - 5, SIZE, SIZE, 3)
    assert torch.equal(result.video[:4], video[:4])  # frames before the overlap are untouched
    print(f"{kind}: segment head vs VAE round trip {float((head - round_trip).abs().max()):.2e}, "
          f"round-trip error {float(vae_error):.3f}")


def test_i2v_mask_marks_the_given_frames(vaes):
    """By hand: 5 given pixel frames = latent frames 0 (frame 0, repeated 4x) and 1 (frames 1-4): mask 1 there."""
    cond = extension_condition(vaes["2.1"], tail_pixels(clip_frames(), 5), 13)
    assert cond.y.shape == (1, 20, 4, SIZE // 8, SIZE // 8)
    assert cond.y[:, :4, :2].min() == 1 and cond.y[:, :4, 2:].max() == 0
    assert torch.equal(cond.first_latent, cond.y[:, 4:, :2])


def test_wan21_i2v_takes_clip_features_of_the_first_given_frame(vaes):
    cfg = WanDiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=1, in_dim=36, text_dim=TEXT_DIM, freq_dim=32,
                       text_len=16, clip_dim=32)
    experts = ExpertSet(randomize_(WanDiT(cfg, VARIANTS["wan21_i2v_14b"]), std=0.1, seed=0).eval())
    args = (experts, vaes["2.1"], clip_frames(), text(), SamplerSettings(2, 5.0), ExtendSettings(9, 5), 1)
    with pytest.raises(InputError, match="CLIP"):
        extend(*args)
    clip = FakeClip()
    result = extend(*args, clip_vision=clip)
    (image,) = clip.seen
    assert torch.equal(image, tail_pixels(clip_frames(), 5)[:, :, 0]) and result.segment.shape[0] == 9


def test_join_cross_fades_the_shared_frames():
    """By hand: video frames 1.0, segment frames 0.0, overlap 3 -> shared frames 3/4, 2/4, 1/4."""
    video, segment = torch.ones(6, 2, 2, 3), torch.zeros(5, 2, 2, 3)
    joined = join(video, segment, 3)
    assert joined.shape[0] == 8
    assert joined[:, 0, 0, 0].tolist() == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25, 0, 0])


@pytest.mark.parametrize("kwargs,needle", [({"overlap": 4}, "4n"), ({"overlap": 9}, "less than"),
                                           ({"frames": 8}, "4n"), ({"color": "lab"}, "color_match")])
def test_bad_extension_settings_are_named(vaes, kwargs, needle):
    args = {"overlap": 5, "frames": 9, "color": "off"} | kwargs
    with pytest.raises(InputError, match=needle):
        run_extension("ti2v", vaes, clip_frames(), args["color"], args["overlap"], args["frames"])


def test_text_to_video_models_cannot_extend(vaes):
    with pytest.raises(InputError, match="image-to-video"):
        extend(tiny_experts("wan21_t2v_1.3b"), vaes["2.1"], clip_frames(), text(), SamplerSettings(2, 5.0),
               ExtendSettings(9, 5), 1)
    with pytest.raises(InputError, match="VAE"):
        extend(tiny_experts("wan22_ti2v_5b", in_dim=48), vaes["2.1"], clip_frames(), text(), SamplerSettings(2, 5.0),
               ExtendSettings(9, 5), 1)


def test_lab_matches_published_values():
    """sRGB red, green, blue, white, mid grey in CIE Lab (D65), as published by Bruce Lindbloom."""
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0.5, 0.5, 0.5]])
    want = torch.tensor([[53.2408, 80.0925, 67.2032], [87.7347, -86.1827, 83.1793], [32.2970, 79.1875, -107.8602],
                         [100, 0, 0], [53.3890, 0, 0]])
    assert (srgb_to_lab(rgb) - want).abs().max() <= 0.01
    x = torch.rand(2, 5, 5, 3)
    assert (lab_to_srgb(srgb_to_lab(x)) - x).abs().max() <= 1e-5


@pytest.mark.parametrize("method", ["mean_std", "histogram"])
def test_colour_match_removes_a_cast(method):
    """A segment with a colour cast: after matching, its Lab mean/std are the reference's; the jump across the
    joint (|d mean| + |d std| over Lab channels) falls (measured and printed)."""
    reference = clip_frames(5)
    cast = (reference * torch.tensor([0.85, 0.95, 1.0]) + torch.tensor([0.1, 0.02, -0.05])).clamp(0, 1)
    matched = match_colors(cast, reference, method)
    before, after = stats_jump(reference, cast), stats_jump(reference, matched)
    print(f"{method}: colour jump {before:.3f} -> {after:.3f} (Lab units)")
    assert after < before / 5
    mean, std = lab_stats(matched)
    ref_mean, ref_std = lab_stats(reference)
    assert (mean - ref_mean).abs().max() <= 0.5 and (std - ref_std).abs().max() <= 0.5


def test_colour_match_in_an_extension_reduces_the_jump_at_the_joint(vaes):
    """Measured on tiny random models (whose new frames differ wildly from the clip): the jump between the clip's
    last frames and the segment's new frames, without and with matching."""
    video = clip_frames()
    jumps = {}
    for method in ("off", "mean_std", "histogram"):
        result = run_extension("i2v_a14b", vaes, video, method)
        jumps[method] = stats_jump(video[-5:], result.segment[5:])
    print("jump at the joint (Lab units): " + ", ".join(f"{k} {v:.2f}" for k, v in jumps.items()))
    assert jumps["mean_std"] < jumps["off"] and jumps["histogram"] < jumps["off"]
