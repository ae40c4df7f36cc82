"""Nodes for the text encoder (UMT5-XXL) and the image encoder (CLIP ViT-H/14 vision, Wan 2.1 I2V/FLF2V).

Encoders wait on the offload device and run on the compute device (or the CPU if asked); after encoding they leave
the GPU unless ``keep_loaded`` is on, so the DiT gets the memory.
"""
from __future__ import annotations

import torch

from ..wan.checks import check_image
from ..wan.conditioning import ClipEmbeds
from ..wan.encoders import encode_prompts, load_clip_vision, load_text_encoder
from ..wan.encoders.tokenizer_source import TOKENIZER_LIMIT
from ..wan.errors import InputError
from . import host
from .choices import DTYPE_CHOICES
from .files import confined_file, list_files
from .validation import file_problem, verdict

TOKENIZER_SUFFIXES = (".model", "tokenizer.json")

CATEGORY = "Wan Experts/conditioning"
LOADER_CATEGORY = "Wan Experts/loaders"
DTYPE_TOOLTIP = ("Compute precision. 'default' keeps the file's precision (bf16 for fp8 files, whose weights stay fp8 "
                 "in memory and are upcast layer by layer).")
TEXT_DTYPE_TOOLTIP = ("Compute precision. 'default' is bf16 like the official code (fp32 for an fp32 file); fp16 can "
                      "overflow in T5. fp8 weights stay fp8 in memory and are upcast layer by layer.")
KEEP_TOOLTIP = ("Keep the encoder on the GPU after encoding (faster when prompts change often). Off: it goes back to "
                "system memory after each use, leaving the GPU to the diffusion model.")


def tokenizer_files() -> list[str]:
    return list_files("text_encoders", TOKENIZER_SUFFIXES, TOKENIZER_LIMIT)


def placement_inputs(device_tooltip: str, dtype_tooltip: str = DTYPE_TOOLTIP) -> dict:
    return {
        "dtype": (DTYPE_CHOICES, {"default": "default", "tooltip": dtype_tooltip}),
        "device": (["gpu", "cpu"], {"default": "gpu", "tooltip": device_tooltip}),
        "keep_loaded": ("BOOLEAN", {"default": False, "tooltip": KEEP_TOOLTIP}),
    }


def place_encoder(model, device: str, keep_loaded: bool):
    model.run_device = host.compute_device() if device == "gpu" else torch.device("cpu")
    model.keep_loaded = bool(keep_loaded)
    return model


class WanExpertsLoadTextEncoder:
    DISPLAY_NAME = "Load Wan Text Encoder (UMT5)"
    DESCRIPTION = ("Loads the UMT5-XXL text encoder and its tokenizer from models/text_encoders: the Comfy-Org "
                   "umt5_xxl_*.safetensors (tokenizer inside, fp8 ok), the official models_t5_umt5-xxl-enc-bf16.pth "
                   "with its google/umt5-xxl folder beside it, or a GGUF encoder (umt5-xxl-encoder-Q8_0.gguf ..., "
                   "tokenizer rebuilt from the file; weights stay quantised and are dequantised layer by layer).")
    CATEGORY = LOADER_CATEGORY
    RETURN_TYPES = ("WAN_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, for Wan Text Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder_name": (host.list_models("text_encoders"), {
                    "tooltip": ("UMT5-XXL file in models/text_encoders: e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors, "
                                "or a GGUF encoder such as umt5-xxl-encoder-Q8_0.gguf / -Q5_K_M / -Q4_K_M.")}),
                **placement_inputs("Where the encoder runs. 'cpu' saves GPU memory at the cost of speed (the "
                                    "official --t5_cpu option).", TEXT_DTYPE_TOOLTIP),
            },
            "optional": {
                "tokenizer": (["auto"] + tokenizer_files(), {"default": "auto", "tooltip": (
                    "Only for files without a tokenizer inside: a spiece.model or tokenizer.json in "
                    "models/text_encoders (subfolders allowed). 'auto': inside the file (the Comfy-Org tensor, or a "
                    "GGUF file's tokenizer metadata), or google/umt5-xxl next to it.")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, tokenizer=None):
        return verdict(file_problem("text_encoders", tokenizer, "tokenizer", TOKENIZER_LIMIT))

    def load(self, text_encoder_name, dtype="default", device="gpu", keep_loaded=False, tokenizer="auto"):
        path = host.model_path("text_encoders", text_encoder_name)
        chosen = None if tokenizer in (None, "", "auto") else confined_file(
            "text_encoders", tokenizer, "tokenizer", TOKENIZER_LIMIT)
        encoder = load_text_encoder(path, tokenizer=chosen, dtype=dtype, device=host.offload_device())
        return (place_encoder(encoder, device, keep_loaded),)


class WanExpertsTextEncode:
    DISPLAY_NAME = "Wan Text Encode"
    DESCRIPTION = ("Encodes the positive and negative prompts with the UMT5 text encoder (512 tokens, zero after each "
                   "prompt's end, as the official code). An empty negative prompt uses the official default.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_TEXT",)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("Positive and negative text embeddings, for Wan Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("WAN_TEXT_ENCODER", {"tooltip": "From Load Wan Text Encoder."}),
            "positive": ("STRING", {"multiline": True, "default": "", "tooltip": (
                "What the video shows. Prompts longer than 512 tokens are cut (a warning says so).")}),
            "negative": ("STRING", {"multiline": True, "default": "", "tooltip": (
                "What to avoid. Empty: the official Wan default negative prompt.")}),
        }}

    def encode(self, text_encoder, positive, negative=""):
        host.check_interrupted()
        return (encode_prompts(text_encoder, positive, negative),)


class WanExpertsLoadCLIPVision:
    DISPLAY_NAME = "Load Wan CLIP Vision"
    DESCRIPTION = ("Loads the CLIP ViT-H/14 image encoder used by Wan 2.1 I2V and FLF2V from models/clip_vision "
                   "(clip_vision_h.safetensors, or the official models_clip_*.pth). Wan 2.2 models do not use it.")
    CATEGORY = LOADER_CATEGORY
    RETURN_TYPES = ("WAN_CLIP_VISION",)
    RETURN_NAMES = ("clip_vision",)
    OUTPUT_TOOLTIPS = ("The image encoder, for Wan CLIP Vision Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (host.list_models("clip_vision"), {
                "tooltip": "CLIP vision file in models/clip_vision (clip_vision_h.safetensors)."}),
            **placement_inputs("Where the encoder runs; 'cpu' saves GPU memory at the cost of speed."),
        }}

    def load(self, clip_name, dtype="default", device="gpu", keep_loaded=False):
        path = host.model_path("clip_vision", clip_name)
        return (place_encoder(load_clip_vision(path, dtype=dtype, device=host.offload_device()), device, keep_loaded),)


class WanExpertsCLIPVisionEncode:
    DISPLAY_NAME = "Wan CLIP Vision Encode"
    DESCRIPTION = ("Encodes the start image (and, for FLF2V, the end image) with CLIP as the official Wan 2.1 code: "
                   "stretched to 224x224 without cropping, tokens of the penultimate block.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_CLIP_EMBEDS",)
    RETURN_NAMES = ("clip_embeds",)
    OUTPUT_TOOLTIPS = ("Image tokens (257 per image; 514 with an end image), for Wan Image To Video.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_vision": ("WAN_CLIP_VISION", {"tooltip": "From Load Wan CLIP Vision."}),
                "start_image": ("IMAGE", {"tooltip": "The first frame of the video (one image per batch item)."}),
            },
            "optional": {
                "end_image": ("IMAGE", {"tooltip": "FLF2V only: the last frame, one per start image."}),
            },
        }

    def encode(self, clip_vision, start_image, end_image=None):
        host.check_interrupted()
        start = comfy_image_to_signed(start_image, "start_image")
        if end_image is None:
            return (ClipEmbeds(clip_vision.encode(start)),)
        return (ClipEmbeds(clip_vision.encode_pair(start, comfy_image_to_signed(end_image, "end_image"))),)


def comfy_image_to_signed(image: torch.Tensor, name: str) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, C] in 0..1 -> [N, C, H, W] in [-1, 1] (alpha and grey are handled by the encoder)."""
    check_image(image, name, channels_last=True)
    lo, hi = image.min().item(), image.max().item()
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"{name} values must lie in 0..1 (ComfyUI IMAGE); found {lo:.3g} to {hi:.3g}.")
    return image.permute(0, 3, 1, 2).float() * 2 - 1


NODES = {
    "WanExpertsLoadTextEncoder": WanExpertsLoadTextEncoder,
    "WanExpertsTextEncode": WanExpertsTextEncode,
    "WanExpertsLoadCLIPVision": WanExpertsLoadCLIPVision,
    "WanExpertsCLIPVisionEncode": WanExpertsCLIPVisionEncode,
}
