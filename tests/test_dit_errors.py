"""Bad DiT input fails early with a message naming the file or input, what was found and what to do."""
import pytest
import torch
from safetensors.torch import save_file

import wan
from wan.errors import CheckpointError, InputError
from oracles import official
from tiny_dit import diffusers_dit, inputs, official_dit, save_safetensors, state_dict_of


@pytest.fixture(scope="module")
def weights():
    return state_dict_of(official_dit("t2v"))


def test_vae_file_given_to_dit_loader(tmp_path):
    vae = official.load("modules.vae2_1").WanVAE_(dim=8, z_dim=4)
    torch.save(vae.state_dict(), tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(CheckpointError, match=r"Wan2.1_VAE.pth.*not a Wan DiT.*looks like a Wan VAE.*VAE loader"):
        wan.load_dit(tmp_path / "Wan2.1_VAE.pth")


def test_text_encoder_file_given_to_dit_loader(tmp_path):
    from transformers import UMT5Config, UMT5EncoderModel

    enc = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    save_file({k: v.clone().contiguous() for k, v in enc.state_dict().items() if k != "encoder.embed_tokens.weight"},
              str(tmp_path / "umt5_xxl_fp16.safetensors"))
    with pytest.raises(CheckpointError, match=r"looks like a text encoder \(UMT5\).*text-encoder loader"):
        wan.load_dit(tmp_path / "umt5_xxl_fp16.safetensors")


def test_truncated_safetensors(weights, tmp_path):
    path = save_safetensors(weights, tmp_path / "partial.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"partial.safetensors.*not a readable safetensors.*truncated"):
        wan.load_dit(path)


def test_pth_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2), "weights"], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list.pth.*not a state dict.*list"):
        wan.load_dit(tmp_path / "list.pth")


class Arbitrary:
    pass


def test_pth_with_python_objects_is_refused(tmp_path):
    torch.save({"obj": Arbitrary()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match=r"pickled.pth.*weights-only"):
        wan.load_dit(tmp_path / "pickled.pth")


def test_missing_and_unexpected_keys_are_listed(weights, tmp_path):
    sd = {k: v for k, v in weights.items() if not k.startswith("blocks.1.ffn")}
    sd["blocks.1.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"4 missing \(e.g. blocks.1.ffn.0.bias.*1 unexpected \(e.g. blocks.1.extra"):
        wan.load_dit(save_safetensors(sd, tmp_path / "broken.safetensors"))


def test_wrong_shape_is_named(weights, tmp_path):
    sd = dict(weights)
    sd["blocks.0.norm3.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match=r"'blocks.0.norm3.bias' has shape \(7,\)"):
        wan.load_dit(save_safetensors(sd, tmp_path / "bad_shape.safetensors"))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        wan.load_dit(tmp_path / "nope.safetensors")
    (tmp_path / "model.onnx").write_bytes(b"ONNX")
    with pytest.raises(CheckpointError, match="unknown file type"):
        wan.load_dit(tmp_path / "model.onnx")


def test_i2v_model_without_y(tmp_path):
    model = wan.load_dit(save_safetensors(state_dict_of(official_dit("i2v22")), tmp_path / "i2v.safetensors"))
    x, t, ctx, _ = inputs(16)
    with pytest.raises(InputError, match=r"takes 36 input channels \(16 latent \+ 20 image conditioning\): pass y"):
        model(x, t, ctx)


def test_t2v_model_given_y(tmp_path):
    model = wan.load_dit(save_safetensors(state_dict_of(official_dit("t2v")), tmp_path / "t2v.safetensors"))
    x, t, ctx, y = inputs(16, 20)
    with pytest.raises(InputError, match="text-to-video"):
        model(x, t, ctx, y=y)


def test_wan21_i2v_without_clip_features(tmp_path):
    diffusers_dit(36, 16, image_dim=48).save_pretrained(tmp_path / "transformer")
    model = wan.load_dit(tmp_path / "transformer")
    x, t, ctx, y = inputs(16, 20)
    with pytest.raises(InputError, match="needs clip_fea, the CLIP vision features"):
        model(x, t, ctx, y=y)


def test_spatial_size_not_divisible_by_patch(tmp_path):
    model = wan.load_dit(save_safetensors(state_dict_of(official_dit("t2v")), tmp_path / "t2v.safetensors"))
    x, t, ctx, _ = inputs(16, h=9)
    with pytest.raises(InputError, match=r"latent size 3x9x12.*not divisible by the patch 1x2x2.*16 pixels"):
        model(x, t, ctx)


def test_bad_timestep_and_context_shapes(tmp_path):
    model = wan.load_dit(save_safetensors(state_dict_of(official_dit("t2v")), tmp_path / "t2v.safetensors"))
    x, t, ctx, _ = inputs(16)
    with pytest.raises(InputError, match=r"t must be \[2\] or per token \[2, 72\]"):
        model(x, torch.zeros(2, 5), ctx)
    with pytest.raises(InputError, match=r"context must be text embeddings \[B, L, 32\]"):
        model(x, t, torch.zeros(2, 512, 31))


def test_mismatched_experts_are_refused(tmp_path):
    t2v = save_safetensors(state_dict_of(official_dit("t2v")), tmp_path / "t2v_high_noise.safetensors")
    i2v = save_safetensors(state_dict_of(official_dit("i2v22")), tmp_path / "i2v_low_noise.safetensors")
    with pytest.raises(InputError, match=r"not a pair: in_dim: 16 vs 36"):
        wan.load_moe(t2v, i2v)
    with pytest.raises(InputError, match="swapped"):
        wan.load_moe(tmp_path / "i2v_low_noise.safetensors", tmp_path / "t2v_high_noise.safetensors")


def test_unknown_dtype_role_and_attention(weights, tmp_path):
    path = save_safetensors(weights, tmp_path / "t2v.safetensors")
    with pytest.raises(InputError, match="dtype 'fp12' is unknown"):
        wan.load_dit(path, dtype="fp12")
    with pytest.raises(InputError, match="role 'middle' is unknown"):
        wan.load_dit(path, role="middle")
    with pytest.raises(InputError, match="attention backend 'sage' needs the 'sageattention' package"):
        wan.load_dit(path, attention="sage")
