"""Bridges from core ComfyUI conditioning to the pack's types, so graphs can encode prompts and images with core
nodes and sample with Wan Sampler.

Core layouts (ComfyUI ``comfy/sd1_clip.py``, ``comfy/text_encoders/wan.py``, ``comfy/clip_vision.py``,
``comfy_extras/nodes_wan.py``):

- ``CONDITIONING`` from CLIP Text Encode with a UMT5 loaded by Load CLIP (type wan) is a list of ``[cond, extras]``
  pairs; ``cond`` is float32 [1, L, 4096] with L = max(512, tokens + 1): the prompt's tokens, its end token, then
  padding whose rows are exactly zero (attention-masked and zeroed). Longer prompts are not cut (L > 512).
- ``CLIP_VISION_OUTPUT`` from CLIP Vision Encode carries ``penultimate_hidden_states`` [B, 257, 1280] (CLIP ViT-H/14,
  output of the second-to-last block); core's first-last-frame node joins start and end along the tokens.

Ours: ``WAN_TEXT`` holds [B, 512, 4096] float32 with rows past each prompt's tokens zero (the official text length);
``WAN_CLIP_EMBEDS`` holds [B, 257, 1280] or [B, 514, 1280] (start tokens, then end tokens).
"""
from __future__ import annotations

import logging

import torch

from ..wan.conditioning import ClipEmbeds, TextEmbeds
from ..wan.errors import InputError

log = logging.getLogger("wan_experts")

CATEGORY = "Wan Experts/conditioning"
TEXT_LEN = 512  # the official Wan text length (tokens the DiT reads)
CLIP_WIDTH = 1280  # CLIP ViT-H/14 (clip_vision_h), the image encoder of Wan 2.1 I2V / FLF2V
KNOWN_EXTRAS = ("pooled_output",)


class WanExpertsConditioningFromCore:
    DISPLAY_NAME = "Wan Text From Core Conditioning"
    DESCRIPTION = ("Turns the positive and negative CONDITIONING of core CLIP Text Encode (with UMT5 loaded by core "
                   "Load CLIP, type 'wan') into Wan text embeddings for Wan Sampler: padded or cut to the official "
                   "512 tokens. Both prompts are needed. Core does not apply the official prompt cleaning and reads "
                   "(word:1.2) weights, so results can differ slightly from Wan Text Encode.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_TEXT",)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("Positive and negative text embeddings, for Wan Sampler.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": (
                "From core CLIP Text Encode (UMT5 from Load CLIP, type 'wan'): what the video shows.")}),
            "negative": ("CONDITIONING", {"tooltip": (
                "From core CLIP Text Encode: what to avoid (Wan models are tuned with the official negative "
                "prompt; Wan Text Encode uses it when its negative is empty).")}),
        }}

    def convert(self, positive=None, negative=None):
        return (text_from_core(positive, negative),)


class WanExpertsCLIPVisionFromCore:
    DISPLAY_NAME = "Wan CLIP Vision From Core"
    DESCRIPTION = ("Turns core CLIP Vision Encode output (clip_vision_h loaded by core Load CLIP Vision) into Wan CLIP "
                   "embeddings for Wan Image To Video (Wan 2.1 I2V / FLF2V). Set CLIP Vision Encode's crop to 'none' "
                   "to see the whole image as the official code does (its resize still differs a little from the "
                   "official one, which Wan CLIP Vision Encode follows).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_CLIP_EMBEDS",)
    RETURN_NAMES = ("clip_embeds",)
    OUTPUT_TOOLTIPS = ("Image tokens (257 per image; 514 with an end image), for Wan Image To Video.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "Core CLIP Vision Encode of the start image."}),
        }, "optional": {
            "end_clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": (
                "FLF2V only: core CLIP Vision Encode of the end image.")}),
        }}

    def convert(self, clip_vision_output, end_clip_vision_output=None):
        return (clip_from_core(clip_vision_output, end_clip_vision_output),)


def text_from_core(positive, negative) -> TextEmbeds:
    """Core CONDITIONING pair -> ``TextEmbeds`` ([B, 512, D] float32 each, zero rows after each prompt)."""
    missing = [name for name, value in (("positive", positive), ("negative", negative)) if value is None]
    if missing:
        raise InputError(f"Wan Text From Core Conditioning needs both a positive and a negative CONDITIONING; "
                         f"{' and '.join(missing)} is not connected. Connect a core CLIP Text Encode to each (or use "
                         f"Wan Text Encode, whose empty negative prompt is the official default)")
    return TextEmbeds(positive=context_from_core(positive, "positive"),
                      negative=context_from_core(negative, "negative"))


def context_from_core(conditioning, name: str) -> torch.Tensor:
    """One core CONDITIONING -> [B, 512, D] float32 on the CPU."""
    cond, extras = _single_entry(conditioning, name)
    if not torch.is_tensor(cond) or cond.dim() != 3:
        found = tuple(cond.shape) if torch.is_tensor(cond) else type(cond).__name__
        raise InputError(f"the {name} CONDITIONING holds {found}, not text states [batch, tokens, features]; "
                         f"connect the output of core CLIP Text Encode")
    ignored = sorted(k for k, v in extras.items() if v is not None and k not in KNOWN_EXTRAS)
    if ignored:
        log.warning("Wan Text From Core Conditioning: the %s CONDITIONING also carries %s, which Wan Sampler does "
                    "not use; make image conditioning with Wan Image To Video", name, ", ".join(ignored))
    return fit_text_len(cond.detach().float().cpu(), name)


def fit_text_len(states: torch.Tensor, name: str) -> torch.Tensor:
    """Zero-pad or cut [B, L, D] to the official 512 rows."""
    length = states.shape[1]
    if length > TEXT_LEN:
        log.warning("Wan Text From Core Conditioning: the %s prompt is %d tokens long; Wan models read %d, the rest "
                    "is cut off (Wan Text Encode cuts before encoding, as the official code does)", name,
                    length - 1, TEXT_LEN)
        return states[:, :TEXT_LEN].contiguous()
    if states[:, -1].any():
        log.warning("Wan Text From Core Conditioning: the %s CONDITIONING has no zero padding after the prompt; it "
                    "may not come from UMT5 loaded by Load CLIP with type 'wan'", name)
    return torch.nn.functional.pad(states, (0, 0, 0, TEXT_LEN - length))


def _single_entry(conditioning, name: str) -> tuple:
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InputError(f"the {name} input must be a CONDITIONING from core CLIP Text Encode; got "
                         f"{type(conditioning).__name__}")
    if len(conditioning) > 1:
        raise InputError(f"the {name} CONDITIONING combines {len(conditioning)} conditionings (Conditioning Combine, "
                         f"or a scheduled text encoder); Wan Sampler takes one prompt per input: connect a single "
                         f"CLIP Text Encode")
    entry = conditioning[0]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[1], dict):
        raise InputError(f"the {name} CONDITIONING is not in core's [[states, options]] layout; connect the output "
                         f"of core CLIP Text Encode")
    return entry[0], entry[1]


def clip_from_core(start, end=None) -> ClipEmbeds:
    """Core CLIP_VISION_OUTPUT(s) -> ``ClipEmbeds`` [B, 257, D] (start) or [B, 514, D] (start, then end tokens)."""
    features = _penultimate(start, "clip_vision_output")
    if end is not None:
        last = _penultimate(end, "end_clip_vision_output")
        if last.shape[0] != features.shape[0] or last.shape[2] != features.shape[2]:
            raise InputError(f"the start image's CLIP output {tuple(features.shape)} and the end image's "
                             f"{tuple(last.shape)} do not fit together; encode both with the same CLIP vision model "
                             f"and one end image per start image")
        features = torch.cat([features, last], dim=1)
    return ClipEmbeds(features)


def _penultimate(output, name: str) -> torch.Tensor:
    states = getattr(output, "penultimate_hidden_states", None)
    if not torch.is_tensor(states) or states.dim() != 3:
        raise InputError(f"{name} must be the output of core CLIP Vision Encode (with penultimate_hidden_states "
                         f"[batch, tokens, features]); got {type(output).__name__}")
    if states.shape[-1] != CLIP_WIDTH:
        log.warning("Wan CLIP Vision From Core: %s has %d features per token; Wan 2.1 I2V / FLF2V use CLIP "
                    "ViT-H/14 (%d): load clip_vision_h.safetensors", name, states.shape[-1], CLIP_WIDTH)
    return states.detach().float().cpu()


NODES = {"WanExpertsConditioningFromCore": WanExpertsConditioningFromCore,
         "WanExpertsCLIPVisionFromCore": WanExpertsCLIPVisionFromCore}
