"""Tiny random-weight Wan models written in the real file layouts, so the normal loaders read them.

Used by ``python -m wan.generate --demo`` (an official Wan-AI folder) and by the workflow tests (Comfy-Org single
files under ``models/<kind>/``). The modules are the engine's own, so the files carry exactly the key layout the
loaders expect; only the sizes are tiny (DiT width 256 with 128-wide heads like the real models, 2 layers; VAE base
width 8; UMT5 width 64 with a small sentencepiece tokenizer trained on the spot). Their output is noise.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .pipeline import EXPERT_FOLDERS, OFFICIAL_CLIP, OFFICIAL_T5, OFFICIAL_TOKENIZER, OFFICIAL_VAE
from ..variants import DEFAULT_NEGATIVE_PROMPT, VARIANTS, Variant

DIT_DIM, DIT_FFN, DIT_HEADS, DIT_LAYERS = 256, 512, 2, 2
T5_DIM, T5_FFN, T5_HEADS, T5_LAYERS = 64, 128, 2, 2
VAE_DIM = 8
WAV2VEC_DIM = 64
CLIP_DIM = 64
CLIP_LAYERS = 2  # blocks Wan reads; the files hold one more (the last block, which Wan skips)
CLIP_TOKENS = 257  # 16x16 patches + class token at 224 px, patch 14
SEED = 2024

DIT_FILE = "diffusion_pytorch_model.safetensors"

_TOKENIZER_CORPUS = (
    "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage. "
    "A cat walks on the grass, realistic style. A red car drives along a coastal road at sunset, cinematic. "
    + DEFAULT_NEGATIVE_PROMPT + "镜头晃动，镜头切换"
)


@dataclass(frozen=True)
class DemoModels:
    """Where the tiny models of one variant were written."""

    variant: Variant
    dits: tuple[Path, ...]  # one file/folder, or (high, low) for Wan 2.2 A14B
    text_encoder: Path
    vae: Path
    clip: Path | None = None
    audio_encoder: Path | None = None  # S2V: wav2vec2


# -- the tiny modules ----------------------------------------------------------------------------------------------
def tiny_dit(variant: Variant, seed: int = SEED) -> nn.Module:
    """A random Wan DiT with the structure of ``variant`` (channels, CLIP branch, FLF positions)."""
    from ..dit.config import WanDiTConfig
    from ..dit.model import WanDiT

    in_dim = {"ti2v": 48}.get(variant.task, 36 if variant.needs_image else 16)
    if variant.task == "s2v":
        return tiny_s2v_dit(variant, seed)
    if variant.task == "vace":
        return tiny_vace_dit(variant, seed)
    if variant.task == "animate":
        return tiny_animate_dit(variant, seed)
    config = WanDiTConfig(dim=DIT_DIM, ffn_dim=DIT_FFN, num_heads=DIT_HEADS, num_layers=DIT_LAYERS, in_dim=in_dim,
                          out_dim=48 if variant.task == "ti2v" else 16, text_dim=T5_DIM,
                          clip_dim=CLIP_DIM if variant.uses_clip else None,
                          flf_pos_len=2 * CLIP_TOKENS if variant.task == "flf2v" else None)
    return _randomized(lambda: WanDiT(config, variant), seed)


def tiny_s2v_dit(variant: Variant, seed: int = SEED) -> nn.Module:
    """A random S2V DiT: audio injection after both blocks, audio features as wide as the tiny wav2vec2."""
    from ..dit.config import WanDiTConfig
    from ..dit.s2v import S2VConfig, WanS2VDiT

    config = WanDiTConfig(dim=DIT_DIM, ffn_dim=DIT_FFN, num_heads=DIT_HEADS, num_layers=DIT_LAYERS, text_dim=T5_DIM)
    s2v = S2VConfig(audio_dim=WAV2VEC_DIM, inject_layers=tuple(range(DIT_LAYERS)))
    return _randomized(lambda: WanS2VDiT(config, s2v, variant), seed)


def tiny_vace_dit(variant: Variant, seed: int = SEED) -> nn.Module:
    """A random VACE DiT: a VACE block feeding each of the two blocks."""
    from ..dit.config import WanDiTConfig
    from ..dit.vace import VaceConfig, WanVaceDiT

    config = WanDiTConfig(dim=DIT_DIM, ffn_dim=DIT_FFN, num_heads=DIT_HEADS, num_layers=DIT_LAYERS, text_dim=T5_DIM)
    return _randomized(lambda: WanVaceDiT(config, VaceConfig(tuple(range(DIT_LAYERS))), variant), seed)


def tiny_animate_dit(variant: Variant, seed: int = SEED) -> nn.Module:
    """A random Animate DiT: the I2V layout with the tiny CLIP's width, a motion encoder of 8 x 8 faces, one face
    adapter block."""
    from ..dit.animate import AnimateConfig, WanAnimateDiT
    from ..dit.config import WanDiTConfig

    config = WanDiTConfig(dim=DIT_DIM, ffn_dim=DIT_FFN, num_heads=DIT_HEADS, num_layers=DIT_LAYERS, in_dim=36,
                          text_dim=T5_DIM, clip_dim=CLIP_DIM)
    animate = AnimateConfig(widths=(16, 16), style_dim=32, motion_dim=4, motion_out=32, linears=2, face_hidden=32,
                            face_heads=2, adapters=1)
    return _randomized(lambda: WanAnimateDiT(config, animate, variant), seed)


def tiny_wav2vec2(seed: int = SEED) -> nn.Module:
    """A random transformers ``Wav2Vec2Model`` in the layout of wav2vec2-large (24 layers: 25 hidden states)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(hidden_size=WAV2VEC_DIM, num_hidden_layers=24, num_attention_heads=1,
                            intermediate_size=2 * WAV2VEC_DIM, conv_dim=(16,) * 7, conv_bias=True,
                            feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Wav2Vec2Model(config).eval()


def write_tiny_wav2vec2(folder: Path, seed: int = SEED) -> Path:
    """The official folder layout (config.json, model.safetensors, preprocessor_config.json). The weights are
    written here, not by ``save_pretrained``, which writes them on rank 0 only once torch.distributed runs."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2FeatureExtractor

    model = tiny_wav2vec2(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(folder / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def tiny_vae(version: str, seed: int = SEED) -> nn.Module:
    from ..vae.config import WanVAEConfig
    from ..vae.model import WanVAEModel

    config = WanVAEConfig(version=version, z_dim=48 if version == "2.2" else 16, dim=VAE_DIM, dec_dim=VAE_DIM,
                          num_res_blocks=1)
    return _randomized(lambda: WanVAEModel(config), seed)


def tiny_text_encoder(seed: int = SEED) -> tuple[nn.Module, bytes]:
    """(UMT5 encoder, sentencepiece model bytes) with a vocabulary that matches the tokenizer."""
    from ..encoders.t5 import UMT5Config, UMT5Encoder

    proto = train_tokenizer()
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
    config = UMT5Config(vocab=vocab, dim=T5_DIM, dim_attn=T5_DIM, dim_ffn=T5_FFN, num_heads=T5_HEADS,
                        num_layers=T5_LAYERS)
    return _randomized(lambda: UMT5Encoder(config), seed), proto


def train_tokenizer(vocab_size: int = 300) -> bytes:
    """A small sentencepiece unigram model with the UMT5 special ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_TOKENIZER_CORPUS.replace("，", "， ").split(". ")), model_writer=model,
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, num_threads=1)
    return model.getvalue()


def _randomized(build, seed: int) -> nn.Module:
    """Build with a fixed seed (default init); parameters left at zero (modulations, heads) get small values."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
        with torch.no_grad():
            for p in module.parameters():
                if not p.any():
                    p.normal_(0, 0.02)
    return module.eval().requires_grad_(False)


# -- file layouts --------------------------------------------------------------------------------------------------
def write_official_folder(folder, task_variant: str | Variant) -> DemoModels:
    """An official Wan-AI folder (Wan2.1-T2V-1.3B style, or Wan2.2 with high/low_noise_model subfolders)."""
    variant = _variant(task_variant)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if variant.moe:
        dits = tuple(_write_dit_folder(folder / name, variant, SEED + i) for i, name in enumerate(EXPERT_FOLDERS))
    else:
        dits = (_write_dit_folder(folder, variant, SEED),)
    encoder, proto = tiny_text_encoder()
    t5 = _save_pth(encoder.state_dict(), folder / OFFICIAL_T5)
    tok_dir = folder / OFFICIAL_TOKENIZER
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "spiece.model").write_bytes(proto)
    vae = _save_pth(tiny_vae(variant.vae).state_dict(), folder / OFFICIAL_VAE[variant.vae])
    clip = _save_pth(tiny_clip_state_dict("official"), folder / OFFICIAL_CLIP) if variant.uses_clip else None
    if variant.task == "s2v":
        write_tiny_wav2vec2(folder / "wav2vec2-large-xlsr-53-english")
    return DemoModels(variant, dits, t5, vae, clip)


def write_comfy_files(models_dir, task_variant: str | Variant, names: dict[str, str | list[str]]) -> DemoModels:
    """Comfy-Org single files under ``models_dir/<kind>/<name>``; ``names`` maps kind -> file name (a list of
    [high, low] for the A14B experts): ``diffusion_models``, ``text_encoders``, ``vae``, optional ``clip_vision``,
    ``audio_encoders`` (S2V: wav2vec2 in transformers names, as the Comfy-Org file)."""
    variant = _variant(task_variant)
    root = Path(models_dir)
    dit_names = names["diffusion_models"]
    dit_names = [dit_names] if isinstance(dit_names, str) else list(dit_names)
    dits = tuple(_save_st(tiny_dit(variant, SEED + i).state_dict(), root / "diffusion_models" / n)
                 for i, n in enumerate(dit_names))
    encoder, proto = tiny_text_encoder()
    tokenizer = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    t5_sd = {**official_t5_to_hf(encoder.state_dict()), "spiece_model": tokenizer}
    t5 = _save_st(t5_sd, root / "text_encoders" / names["text_encoders"])
    vae = _save_st(tiny_vae(variant.vae).state_dict(), root / "vae" / names["vae"])
    clip = None
    if names.get("clip_vision"):
        clip = _save_st(tiny_clip_state_dict("hf"), root / "clip_vision" / names["clip_vision"])
    audio = None
    if names.get("audio_encoders"):
        audio = _save_st(tiny_wav2vec2().state_dict(), root / "audio_encoders" / names["audio_encoders"])
    return DemoModels(variant, dits, t5, vae, clip, audio)


def official_t5_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Wan UMT5 names -> Hugging Face T5 names (the Comfy-Org text-encoder layout)."""
    block = {"attn.": "layer.0.SelfAttention.",
             "pos_embedding.embedding.": "layer.0.SelfAttention.relative_attention_bias.",
             "norm1.": "layer.0.layer_norm.", "ffn.gate.0.": "layer.1.DenseReluDense.wi_0.",
             "ffn.fc1.": "layer.1.DenseReluDense.wi_1.", "ffn.fc2.": "layer.1.DenseReluDense.wo.",
             "norm2.": "layer.1.layer_norm."}
    out = {}
    for key, value in sd.items():
        if key.startswith("token_embedding."):
            out["shared." + key.split(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["encoder.final_layer_norm." + key.split(".", 1)[1]] = value
        else:
            _, n, rest = key.split(".", 2)
            old = next(p for p in block if rest.startswith(p))
            out[f"encoder.block.{n}.{block[old]}{rest[len(old):]}"] = value
    return out


def tiny_clip_state_dict(layout: str, seed: int = SEED) -> dict[str, torch.Tensor]:
    """A tiny CLIP vision tower (224 px, patch 14 -> 257 tokens, width 64) in the ``official`` (``visual.*``,
    fused ``to_qkv``) or ``hf`` (``vision_model.*``) layout, with the last block that Wan never reads."""
    from ..encoders.clip import ClipVisionConfig, ClipVisionTower

    config = ClipVisionConfig(dim=CLIP_DIM, mlp_dim=2 * CLIP_DIM, num_heads=4, num_layers=CLIP_LAYERS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        full = ClipVisionTower(ClipVisionConfig(**{**config.__dict__, "num_layers": CLIP_LAYERS + 1}))
        with torch.no_grad():
            for p in full.parameters():
                if not p.any():
                    p.normal_(0, 0.02)
    sd = full.state_dict()
    return _clip_official(sd) if layout == "official" else _clip_hf(sd)


def _clip_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if ".attn.q." in key:
            parts = [sd[key.replace(".attn.q.", f".attn.{n}.")] for n in "qkv"]
            out["visual." + key.replace(".attn.q.", ".attn.to_qkv.")] = torch.cat(parts)
        elif ".attn.k." not in key and ".attn.v." not in key:
            out["visual." + key] = value
    return out


def _clip_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    top = {"patch_embedding.weight": "embeddings.patch_embedding.weight", "cls_embedding": "embeddings.class_embedding",
           "pos_embedding": "embeddings.position_embedding.weight", "pre_norm.weight": "pre_layrnorm.weight",
           "pre_norm.bias": "pre_layrnorm.bias"}
    block = {"attn.q.": "self_attn.q_proj.", "attn.k.": "self_attn.k_proj.", "attn.v.": "self_attn.v_proj.",
             "attn.proj.": "self_attn.out_proj.", "norm1.": "layer_norm1.", "norm2.": "layer_norm2.",
             "mlp.0.": "mlp.fc1.", "mlp.2.": "mlp.fc2."}
    out = {}
    for key, value in sd.items():
        if key in top:
            out["vision_model." + top[key]] = value.reshape(-1) if key == "cls_embedding" else value.squeeze(0)
            continue
        _, n, rest = key.split(".", 2)
        old = next(p for p in block if rest.startswith(p))
        out[f"vision_model.encoder.layers.{n}.{block[old]}{rest[len(old):]}"] = value
    return out


def _write_dit_folder(folder: Path, variant: Variant, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_dit(variant, seed)
    _save_st(model.state_dict(), folder / DIT_FILE)
    cfg = model.config
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "model_type": variant.task, "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim, "in_dim": cfg.in_dim, "out_dim": cfg.out_dim, "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers, "text_len": cfg.text_len, "eps": cfg.eps,
        **({"vace_layers": list(model.vace_config.layers), "vace_in_dim": model.vace_config.in_dim}
           if hasattr(model, "vace_config") else {})}, indent=2))
    return folder


def _variant(v: str | Variant) -> Variant:
    return v if isinstance(v, Variant) else VARIANTS[v]


def _save_st(sd: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return path


def _save_pth(sd: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().contiguous() for k, v in sd.items()}, str(path))
    return path
