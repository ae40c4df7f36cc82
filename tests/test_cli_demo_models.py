"""The tiny demo models are written in layouts the normal loaders read: Comfy-Org single files (HF T5 names with the
tokenizer inside, HF CLIP names) and official folders (.pth, fused CLIP qkv, tokenizer folder). The two text-encoder
and CLIP layouts are renamed independently in ``wan.runner.demo``; identical outputs from both files check both mappings."""
import pytest
import torch

from wan.runner import demo
from wan.dit.loader import load_dit
from wan.encoders import load_clip_vision, load_text_encoder
from wan.experts import load_moe
from wan.vae.loader import load_vae

COMFY_NAMES = {"diffusion_models": "dit.safetensors", "text_encoders": "umt5_xxl_fp16.safetensors",
               "vae": "vae.safetensors", "clip_vision": "clip_vision_h.safetensors"}


@pytest.mark.parametrize("variant, in_dim, z_dim", [("wan21_flf2v_14b", 36, 16), ("wan22_ti2v_5b", 48, 48)])
def test_comfy_files_load(tmp_path, variant, in_dim, z_dim):
    names = dict(COMFY_NAMES) if variant == "wan21_flf2v_14b" else {k: v for k, v in COMFY_NAMES.items()
                                                                    if k != "clip_vision"}
    files = demo.write_comfy_files(tmp_path, variant, names)
    dit = load_dit(files.dits[0])
    assert dit.config.in_dim == in_dim and dit.config.has_clip == (files.clip is not None)
    assert load_vae(files.vae).z_dim == z_dim
    assert load_text_encoder(files.text_encoder).encode("a cat").shape == (1, 512, dit.config.text_dim)
    if files.clip is not None:
        tokens = load_clip_vision(files.clip).encode_pair(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
        assert tokens.shape == (1, dit.config.flf_pos_len, dit.config.clip_dim)


def test_official_folder_matches_comfy_files(tmp_path):
    official = demo.write_official_folder(tmp_path / "Wan2.1-FLF2V", "wan21_flf2v_14b")
    comfy = demo.write_comfy_files(tmp_path / "models", "wan21_flf2v_14b", COMFY_NAMES)
    prompt, image = "a red car", torch.rand(1, 3, 40, 56) * 2 - 1
    text = [load_text_encoder(f.text_encoder).encode(prompt) for f in (official, comfy)]
    clip = [load_clip_vision(f.clip).encode(image) for f in (official, comfy)]
    assert torch.equal(text[0], text[1]) and text[0].abs().sum() > 0
    assert torch.equal(clip[0], clip[1])


def test_official_a14b_folder_loads_as_an_expert_pair(tmp_path):
    folder = tmp_path / "Wan2.2-T2V-A14B"
    demo.write_official_folder(folder, "wan22_t2v_a14b")
    experts = load_moe(folder, folder)
    assert experts.is_moe and experts.boundary == 0.875
    assert not torch.equal(experts.high.head.head.weight, experts.low.head.head.weight)
