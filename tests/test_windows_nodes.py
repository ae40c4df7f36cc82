"""The long-video nodes called as ComfyUI calls them, on tiny model files under $WAN_EXPERTS_MODELS.

Oracles: Wan Sampler without context windows (a window covering the whole video must give bit-equal latents); Wan
Text Encode for the window prompts (each line's embedding equals that node's positive embedding of the line, to
1e-5 relative: the lines are encoded in another batch);
the VAE round trip of the extended video's last frames (the new segment's first frames equal it within 1e-4).
"""
import importlib

import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from wan.runner import demo

FILES = {"diffusion_models": ["wan2.2_i2v_high_noise_14B.safetensors", "wan2.2_i2v_low_noise_14B.safetensors"],
         "text_encoders": "umt5.safetensors", "vae": "wan_2.1_vae.safetensors"}
W, H, FRAMES = 32, 32, 9


@pytest.fixture
def n(pack, models_dir):
    """The node modules, with the tiny Wan 2.2 I2V-A14B pair, UMT5 and VAE files written."""
    demo.write_comfy_files(models_dir, "wan22_i2v_a14b", FILES)
    return {name: importlib.import_module(f"{pack.__name__}.nodes.{name}")
            for name in ("long_video", "sampling", "dit", "encoders", "vae")}


def load(n):
    model = n["dit"].WanExpertsLoadMoE().load(*FILES["diffusion_models"])[0]
    encoder = n["encoders"].WanExpertsLoadTextEncoder().load(FILES["text_encoders"])[0]
    text = n["encoders"].WanExpertsTextEncode().encode(encoder, "a cat surfing", "")[0]
    vae = n["vae"].WanExpertsLoadVAE().load(FILES["vae"])[0]
    return model, encoder, text, vae


def start_image():
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([x, y, 1 - x], -1)[None]


def i2v_latent(n, model, text, vae, context=None, frames=FRAMES):
    cond, latent = n["sampling"].WanExpertsImageToVideo().make(vae, start_image(), W, H, frames)
    return n["sampling"].WanExpertsSampler().run(model, text, latent, seed=3, steps=3, image_cond=cond,
                                                 context=context)[0]


def test_every_input_has_a_tooltip(n):
    for node_id, cls in n["long_video"].NODES.items():
        assert node_id.startswith("WanExperts") and cls.DESCRIPTION and cls.DISPLAY_NAME
        assert cls.CATEGORY.startswith("Wan Experts/")
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                assert spec[1].get("tooltip"), f"{node_id}.{name}"


def test_sampler_with_context_windows(n):
    model, encoder, text, vae = load(n)
    plain = i2v_latent(n, model, text, vae)
    whole = n["long_video"].WanExpertsContextWindows().make(FRAMES, 4)[0]
    same = i2v_latent(n, model, text, vae, whole)
    assert torch.equal(same["samples"], plain["samples"])
    prompts = "a cat surfing\n\na dog surfing\n"
    context = n["long_video"].WanExpertsContextWindows().make(5, 4, "uniform_standard", "pyramid", True, "first",
                                                             encoder, prompts)[0]
    dog = n["encoders"].WanExpertsTextEncode().encode(encoder, "a dog surfing", "")[0]
    assert context.prompt_texts == ["a cat surfing", "a dog surfing"]
    for got, want in ((context.prompts[1:2], dog.positive), (context.prompts[:1], text.positive)):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()  # other batch mates: float rounding only
    windowed = i2v_latent(n, model, text, vae, context)
    assert windowed["samples"].shape == plain["samples"].shape and torch.isfinite(windowed["samples"]).all()
    with pytest.raises(Exception, match="text encoder"):
        n["long_video"].WanExpertsContextWindows().make(window_prompts="a line")


def test_extensions_chain(n):
    """Two chained Wan Extend Video nodes: 9 + (9 - 5) + (9 - 5) frames; the first segment starts with the VAE round
    trip of the video's last 5 frames."""
    model, _, text, vae = load(n)
    video = n["vae"].WanExpertsVAEDecode().decode(vae, i2v_latent(n, model, text, vae))[0]
    encoded = n["vae"].WanExpertsVAEEncode().encode(vae, video[-5:])[0]
    round_trip = n["vae"].WanExpertsVAEDecode().decode(vae, encoded)[0]
    node = n["long_video"].WanExpertsExtendVideo()
    lengths = []
    for seed in (1, 2):
        joined, segment, latent = node.extend(model, text, vae, video, seed, steps=3, frames=9, overlap_frames=5,
                                              color_match="histogram")
        assert latent["samples"].shape == (1, 16, 3, H // 8, W // 8) and segment.shape == (9, H, W, 3)
        assert torch.equal(joined[:video.shape[0] - 5], video[:-5])
        if seed == 1:
            raw = n["vae"].WanExpertsVAEDecode().decode(vae, latent)[0]  # before colour matching
            assert (raw[:5] - round_trip).abs().max() <= 1e-4
        video = joined
        lengths.append(video.shape[0])
    assert lengths == [FRAMES + 4, FRAMES + 8]
