"""Tiny random-weight Wan DiTs from the independent implementations (official ``wan22``, diffusers), and writers
for the file layouts users have. Width 256 with heads of 128 keeps the real head size, so the loaders' default
head count (width / 128) applies, as for every released model."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from oracles import official
from oracles.randomize import randomize_

DIM, FFN, HEADS, LAYERS, TEXT_DIM, FREQ_DIM, TEXT_LEN = 256, 384, 2, 2, 32, 64, 512

# official model_type, in_dim, out_dim for the variants the official WanModel covers
OFFICIAL_KINDS = {"t2v": ("t2v", 16, 16), "i2v22": ("i2v", 36, 16), "ti2v": ("ti2v", 48, 48)}


def official_dit(kind: str = "t2v", seed: int = 0, std: float = 0.1):
    model_type, in_dim, out_dim = OFFICIAL_KINDS[kind]
    WanModel = official.load("modules.model").WanModel
    model = WanModel(model_type=model_type, in_dim=in_dim, out_dim=out_dim, dim=DIM, ffn_dim=FFN, num_heads=HEADS,
                     num_layers=LAYERS, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, text_len=TEXT_LEN)
    return randomize_(model.eval(), std=std, seed=seed)


def diffusers_dit(in_channels=16, out_channels=16, image_dim=None, pos_embed_seq_len=None, seed=0, std=0.1):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=in_channels,
        out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, ffn_dim=FFN, num_layers=LAYERS,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=image_dim,
        added_kv_proj_dim=DIM if image_dim else None, rope_max_seq_len=1024, pos_embed_seq_len=pos_embed_seq_len)
    return randomize_(model.eval(), std=std, seed=seed)


def state_dict_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_safetensors(sd: dict, path: Path, prefix: str = "") -> Path:
    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def save_scaled_fp8(model, path: Path, quantize) -> Path:
    """A Comfy-Org scaled-fp8 file of ``model`` (names under ``model.diffusion_model.``, a ``scaled_fp8`` marker):
    the 2-D ``.weight`` tensors whose name ``quantize`` accepts stored as fp8 e4m3 with a ``scale_weight`` each.
    ``model`` gets the dequantised weights, so that it is the oracle of the file."""
    sd = state_dict_of(model)
    stored = {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.dim() == 2 and quantize(k):
            scale = v.abs().max() / 448.0
            stored[k] = (v / scale).to(torch.float8_e4m3fn)
            stored[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
            sd[k] = stored[k].float() * scale
        else:
            stored[k] = v
    model.load_state_dict(sd)
    stored = {"model.diffusion_model." + k: v.contiguous() for k, v in stored.items()}
    return save_safetensors({"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn), **stored}, path)


def save_sharded(sd: dict, folder: Path, shards: int = 3) -> Path:
    """Official Wan-AI folder: diffusion_pytorch_model-0000i-of-0000n.safetensors + index + config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k] for k in keys[i::shards]}
        save_safetensors(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": DIM, "num_heads": HEADS}))
    return folder


def inputs(in_dim: int = 16, y_dim: int = 0, batch: int = 2, frames: int = 3, h: int = 8, w: int = 12,
           text_tokens: int = TEXT_LEN, seed: int = 1):
    """Random latents, timesteps, text context (and y) for a forward pass."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_dim, frames, h, w, generator=g)
    t = torch.tensor([999.0, 421.0][:batch])
    ctx = torch.randn(batch, text_tokens, TEXT_DIM, generator=g)
    y = torch.randn(batch, y_dim, frames, h, w, generator=g) if y_dim else None
    return x, t, ctx, y


def text_to_video(model) -> torch.Tensor:
    """One no-grad forward of a T2V model on the default ``inputs``."""
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        return model(x, t, ctx)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4, abs_: float = 1e-5) -> float:
    """The project's parity bar: max|ours - ref| <= rel * max|ref| + abs. Returns the max error."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err = (ours.float() - ref.float()).abs().max().item()
    bound = rel * ref.abs().max().item() + abs_
    assert err <= bound, f"max error {err:.3e} > bound {bound:.3e}"
    return err
