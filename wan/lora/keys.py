"""LoRA key names of every scheme -> (scheme, official DiT name, piece).

A LoRA key is ``<prefix><module><piece suffix>``: the prefix names the scheme (``diffusion_model.``,
``lora_unet_``, ``transformer.``, ...), the module is written with dots or underscores in official Wan names or in
diffusers names, and the suffix says which piece it is (``.lora_down.weight`` = down, ``.alpha``, ``.diff_b``, ...).
The module is brought to its official name (``blocks.0.self_attn.q``); diffusers names go through the DiT's own
diffusers map (``wan.dit.keys``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..dit.keys import diffusers_key_to_official

# suffix -> piece; the first match wins, so longer suffixes come before their tails
PIECES = (
    (".lora_up.weight", "up"), (".lora_down.weight", "down"), (".lora_mid.weight", "mid"),
    (".lora_B.default.weight", "up"), (".lora_A.default.weight", "down"),
    (".lora_B.weight", "up"), (".lora_A.weight", "down"), (".lora_B.bias", "lora_bias"),
    (".alpha", "alpha"), (".dora_scale", "dora_scale"),
    (".lora_magnitude_vector.default.weight", "dora_scale"), (".lora_magnitude_vector.weight", "dora_scale"),
    (".lora_magnitude_vector", "dora_scale"),
    (".diff_b", "diff_b"), (".diff_m", "diff_m"), (".diff", "diff"),
    (".lokr_w1_a", "lokr_w1_a"), (".lokr_w1_b", "lokr_w1_b"), (".lokr_w1", "lokr_w1"),
    (".lokr_w2_a", "lokr_w2_a"), (".lokr_w2_b", "lokr_w2_b"), (".lokr_w2", "lokr_w2"), (".lokr_t2", "lokr_t2"),
    (".hada_w1_a", "hada_w1_a"), (".hada_w1_b", "hada_w1_b"), (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"), (".hada_t1", "hada_t1"), (".hada_t2", "hada_t2"),
    (".w_norm", "w_norm"), (".b_norm", "b_norm"),  # LyCORIS: differences of a norm layer's weight and bias
)
# LyCORIS algorithms read by no rule here: a key suffix that marks each (ComfyUI core's adapter names)
UNSUPPORTED = (
    ("GLoRA", (".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight")),
    ("BOFT / OFT", (".oft_blocks", ".oft_diag")),
    ("OFT (PEFT)", (".oft_r.weight", ".oft_R.weight", ".oft_s")),
)

# prefix -> scheme, first match wins; "" (bare names) last
SCHEMES = (
    ("lora_unet__", "VideoX-Fun"),
    ("lora_unet_", "kohya / musubi-tuner"),
    ("lora_te", "kohya (text encoder)"),
    ("lycoris_", "LyCORIS / SimpleTuner"),
    ("lora_transformer_", "OneTrainer"),
    ("model.diffusion_model.", "Comfy / original"),
    ("diffusion_model.", "Comfy / original"),
    ("base_model.model.", "PEFT"),
    ("transformer.", "diffusers / PEFT"),
    ("pipe.dit.", "DiffSynth"),
    ("", "DiffSynth"),
)
_UNDERSCORED = ("lora_unet_", "lycoris_", "lora_transformer_")

# every module (or bare parameter) of a Wan DiT a LoRA can target; "blocks.N" and "head" hold ``diff_m``
_BLOCK_PART = (r"self_attn\.(q|k|v|o|norm_q|norm_k)|cross_attn\.(q|k|v|o|norm_q|norm_k|k_img|v_img|norm_k_img)"
               r"|ffn\.(0|2)|norm3|modulation")
OFFICIAL = re.compile(rf"blocks\.\d+(\.({_BLOCK_PART}))?|vace_blocks\.\d+(\.({_BLOCK_PART}|before_proj|after_proj))?"
                      r"|head(\.head|\.modulation)?|(vace_)?patch_embedding"
                      r"|(text_embedding|time_embedding)\.(0|2)|time_projection\.1|img_emb\.(proj\.(0|1|3|4)|emb_pos)")
BARE_PARAMETERS = re.compile(r"(vace_)?blocks\.\d+\.modulation|head\.modulation|img_emb\.emb_pos")
IMAGE_BRANCH = re.compile(r".*\.(k_img|v_img|norm_k_img)(\.|$)|img_emb\.")  # 2.1 I2V / FLF2V only

# words that keep their underscores when an underscored name is read back (official, then diffusers words);
# longer words first so that e.g. norm_k_img wins over norm_k
_WORDS = sorted((
    "self_attn", "cross_attn", "norm_q", "norm_k", "norm_k_img", "k_img", "v_img", "patch_embedding",
    "text_embedding", "time_embedding", "time_projection", "img_emb", "emb_pos", "vace_blocks", "before_proj",
    "after_proj", "vace_patch_embedding",
    "to_q", "to_k", "to_v", "to_out", "add_k_proj", "add_v_proj", "norm_added_k", "norm_added_q", "proj_out",
    "condition_embedder", "text_embedder", "time_embedder", "image_embedder", "time_proj", "linear_1",
    "linear_2", "scale_shift_table", "pos_embed",
), key=lambda w: -w.count("_"))


@dataclass(frozen=True)
class ParsedKey:
    scheme: str
    module: str | None  # official module name, None when the key names nothing in a Wan DiT
    piece: str | None  # None when the suffix is not a LoRA piece


def parse_key(key: str) -> ParsedKey:
    prefix, scheme = next((p, s) for p, s in SCHEMES if key.startswith(p))
    stem, piece = split_piece(key[len(prefix):])
    if piece is None:
        return ParsedKey(scheme, None, None)
    if prefix.startswith(_UNDERSCORED):
        stem = dotted(stem)
    return ParsedKey(scheme, official_module(stem), piece)


def unsupported_algorithm(keys) -> tuple[str, str] | None:
    """(algorithm, an example key) of the first key whose suffix marks a LyCORIS algorithm not read here."""
    for key in keys:
        for algorithm, suffixes in UNSUPPORTED:
            if key.endswith(suffixes):
                return algorithm, key
    return None


def split_piece(name: str) -> tuple[str, str | None]:
    for suffix, piece in PIECES:
        if name.endswith(suffix):
            return name[: -len(suffix)], piece
    return name, None


def official_module(name: str) -> str | None:
    """``name`` in official or diffusers spelling -> the official module name, or None."""
    if OFFICIAL.fullmatch(name):
        return name
    mapped = diffusers_key_to_official(name + ".")
    mapped = mapped[:-1] if mapped else None
    return mapped if mapped and OFFICIAL.fullmatch(mapped) else None


def dotted(name: str) -> str:
    """``blocks_0_cross_attn_norm_k_img`` -> ``blocks.0.cross_attn.norm_k_img`` (kohya-style names)."""
    parts, out, i = name.split("_"), [], 0
    while i < len(parts):
        for word in _WORDS:
            n = word.count("_") + 1
            if "_".join(parts[i:i + n]) == word:
                out.append(word)
                i += n
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def parameter_of(module: str, piece: str) -> str | None:
    """The DiT parameter a piece changes: ``diff_b`` the bias, ``diff_m`` the modulation, the rest the weight (or
    the module itself when it is a bare parameter such as ``blocks.N.modulation``)."""
    container = re.fullmatch(r"blocks\.\d+|head", module) is not None
    if piece == "diff_m":
        return f"{module}.modulation" if container else None
    if container:
        return None
    if piece in ("diff_b", "lora_bias", "b_norm"):
        return None if BARE_PARAMETERS.fullmatch(module) else f"{module}.bias"
    return module if BARE_PARAMETERS.fullmatch(module) else f"{module}.weight"
