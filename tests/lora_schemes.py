"""LoRA files in the key schemes found in the wild, written from one random LoRA, and the diffusers oracle.

The writers spell every key by hand, as each trainer saves it (not through ``wan.lora``); the diffusers names come
from a table written here from the diffusers model, independent of ``wan.dit.keys``.

Oracle: diffusers reads a file with ``WanPipeline.lora_state_dict`` (its own key conversion and alpha handling), and
the converted ``lora_A`` / ``lora_B`` (+ ``lora_B.bias``) are fused into a copy of the diffusers model by the plain
rule of PEFT's ``fuse_lora`` at scale s: ``W += s · B @ A``, ``b += s · bias`` (PEFT itself is not installed here).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from tiny_dit import official_dit, save_safetensors, state_dict_of

# official module -> diffusers module (WanTransformer3DModel)
_DIFFUSERS_BLOCK = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
                    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
                    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "cross_attn.k_img": "attn2.add_k_proj",
                    "cross_attn.v_img": "attn2.add_v_proj", "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
_DIFFUSERS_TOP = {"head.head": "proj_out", "time_projection.1": "condition_embedder.time_proj",
                  "text_embedding.0": "condition_embedder.text_embedder.linear_1",
                  "text_embedding.2": "condition_embedder.text_embedder.linear_2",
                  "time_embedding.0": "condition_embedder.time_embedder.linear_1",
                  "time_embedding.2": "condition_embedder.time_embedder.linear_2",
                  "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
                  "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2"}

BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                 "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


def diffusers_module(official: str) -> str:
    if official.startswith("blocks."):
        _, n, rest = official.split(".", 2)
        return f"blocks.{n}.{_DIFFUSERS_BLOCK[rest]}"
    return _DIFFUSERS_TOP[official]


@dataclass
class RandomLora:
    """One LoRA in official module names: ``up`` [out, r], ``down`` [r, in], ``alpha`` (None: none written),
    ``bias`` (a ``diff_b``) for some modules."""

    up: dict[str, torch.Tensor] = field(default_factory=dict)
    down: dict[str, torch.Tensor] = field(default_factory=dict)
    alpha: dict[str, float] = field(default_factory=dict)
    bias: dict[str, torch.Tensor] = field(default_factory=dict)


def random_lora(shapes: dict, modules, rank: int = 4, alpha: float | None = 3.0, bias_modules=(), seed: int = 7,
                std: float = 0.1) -> RandomLora:
    """``shapes``: official parameter name -> shape (the model's state dict). Alphas go to block layers only
    (diffusers' Comfy-name reader takes none outside the blocks)."""
    g = torch.Generator().manual_seed(seed)
    lora = RandomLora()
    for i, m in enumerate(modules):
        out, inp = shapes[f"{m}.weight"]
        r = rank + i % 2  # two ranks, so rank = rows of down is exercised
        lora.up[m] = torch.randn(out, r, generator=g) * std
        lora.down[m] = torch.randn(r, inp, generator=g) * std
        if alpha is not None and m.startswith("blocks."):
            lora.alpha[m] = alpha
    for m in bias_modules:
        lora.bias[m] = torch.randn(shapes[f"{m}.bias"][0], generator=g) * std
    return lora


def merged_by_hand(sd: dict, lora: RandomLora, strength: float) -> dict:
    """The plain rule on official names: W + s · (alpha / rank) · up @ down, b + s · diff_b."""
    out = dict(sd)
    for m, up in lora.up.items():
        down = lora.down[m]
        scale = lora.alpha[m] / down.shape[0] if m in lora.alpha else 1.0
        out[f"{m}.weight"] = sd[f"{m}.weight"] + strength * scale * (up @ down)
    for m, b in lora.bias.items():
        out[f"{m}.bias"] = sd[f"{m}.bias"] + strength * b
    return out


# -- writers: scheme name -> LoRA -> {key: tensor} -----------------------------------------------------------------
def _pairs(lora, name, down_suffix, up_suffix, alpha=True):
    keys = {}
    for m in lora.up:
        keys[f"{name(m)}{down_suffix}"] = lora.down[m]
        keys[f"{name(m)}{up_suffix}"] = lora.up[m]
        if alpha and m in lora.alpha:
            keys[f"{name(m)}.alpha"] = torch.tensor(lora.alpha[m])
    return keys


def _with_bias(keys, lora, name, suffix):
    keys.update({f"{name(m)}{suffix}": b for m, b in lora.bias.items()})
    return keys


def comfy(lora):  # ComfyUI / original Wan trainers
    name = lambda m: f"diffusion_model.{m}"  # noqa: E731
    return _with_bias(_pairs(lora, name, ".lora_down.weight", ".lora_up.weight"), lora, name, ".diff_b")


def comfy_ab(lora):  # diffusion-pipe, ai-toolkit, lightx2v
    name = lambda m: f"diffusion_model.{m}"  # noqa: E731
    return _with_bias(_pairs(lora, name, ".lora_A.weight", ".lora_B.weight"), lora, name, ".diff_b")


def kohya(lora):  # kohya sd-scripts / musubi-tuner
    return _pairs(lora, lambda m: "lora_unet_" + m.replace(".", "_"), ".lora_down.weight", ".lora_up.weight")


def videox_fun(lora):  # VideoX-Fun: a double underscore after lora_unet
    return _pairs(lora, lambda m: "lora_unet__" + m.replace(".", "_"), ".lora_down.weight", ".lora_up.weight")


def diffusers(lora):  # diffusers / PEFT training scripts: no alpha (alpha == rank), lora_bias for differences
    name = lambda m: f"transformer.{diffusers_module(m)}"  # noqa: E731
    return _with_bias(_pairs(lora, name, ".lora_A.weight", ".lora_B.weight", alpha=False), lora, name,
                      ".lora_B.bias")


def diffsynth(lora):  # DiffSynth-Studio: bare official names, PEFT's adapter name "default"
    return _pairs(lora, lambda m: m, ".lora_A.default.weight", ".lora_B.default.weight", alpha=False)


def diffsynth_pipe(lora):  # DiffSynth-Studio pipeline saves
    return _pairs(lora, lambda m: f"pipe.dit.{m}", ".lora_A.default.weight", ".lora_B.default.weight", alpha=False)


def peft_base(lora):  # PEFT get_peft_model(...).save_pretrained on the official model
    return _pairs(lora, lambda m: f"base_model.model.{m}", ".lora_A.weight", ".lora_B.weight", alpha=False)


def lycoris(lora):  # SimpleTuner's LyCORIS LoRA: diffusers names with underscores
    return _pairs(lora, lambda m: "lycoris_" + diffusers_module(m).replace(".", "_"), ".lora_down.weight",
                  ".lora_up.weight")


WRITERS = {"comfy": comfy, "comfy_ab": comfy_ab, "kohya": kohya, "videox_fun": videox_fun, "diffusers": diffusers,
           "diffsynth": diffsynth, "diffsynth_pipe": diffsynth_pipe, "peft_base": peft_base, "lycoris": lycoris}
# the schemes diffusers reads itself; the others are checked against diffusers reading their Comfy twin
DIFFUSERS_READS = ("comfy", "comfy_ab", "kohya", "diffusers")
# schemes without alpha keys: alpha / rank = 1
NO_ALPHA = ("diffusers", "diffsynth", "diffsynth_pipe", "peft_base")


def write(scheme: str, lora: RandomLora, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in WRITERS[scheme](lora).items()}, str(path))
    return path


# -- the diffusers oracle ------------------------------------------------------------------------------------------
def diffusers_fused(model, path: Path, strength: float):
    """A copy of the diffusers model with the LoRA file at ``path`` fused as diffusers converts it."""
    from diffusers import WanPipeline

    converted = WanPipeline.lora_state_dict(str(path.parent), weight_name=path.name)
    sd = state_dict_of(model)
    used = set()
    for key, a in converted.items():
        module = key[len("transformer."):].rsplit(".lora_", 1)[0]
        if key.endswith(".lora_A.weight"):
            b = converted[key.replace(".lora_A.", ".lora_B.")]
            sd[f"{module}.weight"] = sd[f"{module}.weight"] + strength * (b.float() @ a.float())
            used |= {key, key.replace(".lora_A.", ".lora_B.")}
        elif key.endswith(".lora_B.bias"):
            sd[f"{module}.bias"] = sd[f"{module}.bias"] + strength * a.float()
            used.add(key)
    assert used == set(converted), f"the oracle left keys unused: {sorted(set(converted) - used)[:4]}"
    fused = copy.deepcopy(model)
    fused.load_state_dict(sd)
    return fused


def diffusers_forward(model, x, t, ctx, y=None, clip=None):
    hidden = x if y is None else torch.cat([x, y], dim=1)
    with torch.no_grad():
        return model(hidden, timestep=t, encoder_hidden_states=ctx, encoder_hidden_states_image=clip,
                     return_dict=False)[0]


# -- the official oracle -------------------------------------------------------------------------------------------
def official_forward(ref, sd: dict, x, t, ctx):
    """The official ``WanModel`` run with the state dict ``sd`` (e.g. patched by hand)."""
    ref = copy.deepcopy(ref)
    ref.load_state_dict(sd)
    seq_len = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
    with torch.no_grad():
        return torch.stack(ref(list(x), t=t[:, None].expand(-1, seq_len), context=list(ctx), seq_len=seq_len))


def official_and_ours(folder: Path, kind: str = "t2v"):
    """(official model, its state dict, the same weights loaded by ``wan.load_dit``)."""
    import wan

    ref = official_dit(kind)
    sd = state_dict_of(ref)
    return ref, sd, wan.load_dit(save_safetensors(sd, folder / "dit.safetensors"))
