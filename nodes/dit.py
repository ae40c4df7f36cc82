"""Nodes that load Wan diffusion transformers into a ``WAN_MODEL`` (one DiT, or a 2.2 high/low expert pair)."""
from __future__ import annotations

import logging

from ..wan.dit.attention import BACKENDS
from ..wan.dit.loader import load_dit
from ..wan.experts import ExpertSet, load_moe
from . import host
from .choices import DTYPE_CHOICES
from .validation import number_problem, verdict

log = logging.getLogger("wan_experts")

CATEGORY = "Wan Experts/loaders"
DTYPE_TOOLTIP = ("Compute precision. 'default' keeps the file's precision (bf16 for fp8, comfy_quant and GGUF "
                 "files, whose weights stay compact in memory and are dequantised layer by layer).")
FILE_KINDS = ".safetensors (bf16, fp16, fp8, comfy_quant fp8/NVFP4) or .gguf (Q8_0, Q6_K, Q5_K_M, Q4_K_M ...)"
OFFLOAD_TOOLTIP = ("Block streaming for GPUs too small for the whole model: this many of the last transformer blocks "
                   "wait in system memory and are copied to the GPU one at a time just before they run (overlapped "
                   "with the previous block). 0 = off (the whole model on the GPU); -1 = auto: chosen from the free "
                   "GPU memory and the video size when sampling starts (the log says what it picked). The 14B models "
                   "have 40 blocks, 1.3B and 5B 30. Slower as N grows; the model is not copied in system memory (two "
                   "block-sized buffers are).")
OFFLOAD_INPUT = ("INT", {"default": 0, "min": -1, "max": 64, "tooltip": OFFLOAD_TOOLTIP})
FP8_MATMUL_INPUT = ("BOOLEAN", {"default": False, "tooltip": (
    "fp8 files (fp8, scaled fp8, comfy_quant fp8): multiply in fp8 instead of converting each weight to bf16 first "
    "(activations rounded to fp8 per token; error bound in the README). Faster on GPUs with fp8 units (RTX 40xx, "
    "H100 and newer); elsewhere the normal product runs and the log says so. Off = exact.")})
ATTENTION_TOOLTIP = ("Attention kernel. 'auto' picks the fastest exact one measured for the device and precision "
                     "(CPU bf16: 'split', otherwise 'sdpa'); 'sdpa' is PyTorch's; 'split' computes it as chunked "
                     "matrix products; 'sage' and 'flash' need the sageattention / flash-attn package and a CUDA GPU.")


def _model_list():
    return (host.list_models("diffusion_models"),)


class WanExpertsLoadDiT:
    DISPLAY_NAME = "Load Wan DiT"
    DESCRIPTION = ("Loads one Wan diffusion model (2.1 T2V/I2V/FLF2V, 2.2 TI2V-5B, or a single 2.2 A14B expert) from "
                   "models/diffusion_models or models/unet: safetensors (incl. fp8 and comfy_quant) or GGUF. The "
                   "variant is detected from the weights.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded diffusion model, for Wan Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": _model_list() + ({"tooltip": f"DiT file in models/diffusion_models or models/unet: "
                                                       f"{FILE_KINDS}."},),
            "dtype": (DTYPE_CHOICES, {"default": "default", "tooltip": DTYPE_TOOLTIP}),
            "role": (["auto", "single", "high", "low"], {"default": "auto", "tooltip": (
                "For a Wan 2.2 A14B expert loaded alone: which noise range it serves. 'auto' reads a high_noise / "
                "low_noise hint in the file name, else 'single'.")}),
            "attention": (list(BACKENDS), {"default": "auto", "tooltip": ATTENTION_TOOLTIP}),
            "offload_blocks": OFFLOAD_INPUT,
            "fp8_matmul": FP8_MATMUL_INPUT,
        }}

    def load(self, model_name, dtype="default", role="auto", attention="auto", offload_blocks=0, fp8_matmul=False):
        path = host.model_path("diffusion_models", model_name)
        model = load_dit(path, dtype=dtype, device=host.offload_device(), role=role, attention=attention,
                         offload_blocks=offload_blocks, fp8_matmul=bool(fp8_matmul))
        return (ExpertSet(model),)


class WanExpertsLoadMoE:
    DISPLAY_NAME = "Load Wan 2.2 MoE (high + low noise)"
    DESCRIPTION = ("Loads the two experts of a Wan 2.2 A14B model (T2V or I2V). Wan Sampler switches from the "
                   "high-noise to the low-noise expert automatically at the boundary timestep.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("Both experts with their switch boundary, for Wan Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "high_noise_model": _model_list() + ({"tooltip": (
                "The high-noise expert file (…high_noise….safetensors or .gguf).")},),
            "low_noise_model": _model_list() + ({"tooltip": (
                "The low-noise expert file (…low_noise….safetensors or .gguf).")},),
            "dtype": (DTYPE_CHOICES, {"default": "default", "tooltip": DTYPE_TOOLTIP}),
            "boundary": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.999, "step": 0.005, "tooltip": (
                "Switch to the low-noise expert when timestep < boundary x 1000. 0 = auto: 0.875 for T2V, "
                "0.900 for I2V (the official values).")}),
            "attention": (list(BACKENDS), {"default": "auto", "tooltip": ATTENTION_TOOLTIP}),
            "offload_blocks": OFFLOAD_INPUT,
            "fp8_matmul": FP8_MATMUL_INPUT,
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, boundary=None):
        return verdict(number_problem(cls, boundary=boundary))

    def load(self, high_noise_model, low_noise_model, dtype="default", boundary=0.0, attention="auto",
             offload_blocks=0, fp8_matmul=False):
        high = host.model_path("diffusion_models", high_noise_model)
        low = host.model_path("diffusion_models", low_noise_model)
        experts = load_moe(high, low, dtype=dtype, device=host.offload_device(),
                           boundary="auto" if boundary == 0 else boundary, attention=attention,
                           offload_blocks=offload_blocks, fp8_matmul=bool(fp8_matmul))
        log.info("Wan MoE %s: boundary %.3f (%s)", experts.variant.id if experts.variant else "?", experts.boundary,
                 "auto" if boundary == 0 else "set")
        return (experts,)


NODES = {"WanExpertsLoadDiT": WanExpertsLoadDiT, "WanExpertsLoadMoE": WanExpertsLoadMoE}
