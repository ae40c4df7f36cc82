"""Wan Compile: a ``WAN_MODEL`` whose transformer blocks run through ``torch.compile`` while sampling."""
from __future__ import annotations

import dataclasses

from ..wan.dit.compile import DYNAMIC, MODES, SCOPES, CompileOptions
from ..wan.experts import as_expert_set

CATEGORY = "Wan Experts/loaders"


class WanExpertsCompile:
    DISPLAY_NAME = "Wan Compile"
    DESCRIPTION = ("Compiles the transformer block with torch.compile (regional: one graph serves every block of both "
                   "Wan 2.2 experts; embeddings, head, step caches and block streaming stay as they are). The first "
                   "step pays the compile time; later steps, the expert switch, cached steps, equal context windows "
                   "and LoRA strengths reuse the graph. Where compile cannot run (no C++ compiler, no triton) the "
                   "model runs as usual and the log says why. The input model is unchanged.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model, compiled while it samples.",)
    FUNCTION = "compile"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WAN_MODEL", {"tooltip": "A Wan model from a loader or a Wan LoRA node."}),
            "mode": (list(MODES), {"default": "default", "tooltip": (
                "torch.compile mode. 'default': fast to compile. 'max-autotune-no-cudagraphs': tries kernel variants "
                "(much longer first step, sometimes faster). 'reduce-overhead': CUDA graphs (GPU; uses more memory, "
                "not with block streaming).")}),
            "dynamic": (list(DYNAMIC), {"default": "auto", "tooltip": (
                "Shapes. 'auto': compiled for the first video size; a second size recompiles once for any size. "
                "'off': one compile per size. 'on': any size from the start (slightly slower kernels).")}),
            "scope": (list(SCOPES), {"default": "blocks", "tooltip": (
                "'blocks': one transformer block (one short compile, reused by all blocks). 'whole model': the "
                "stack of blocks as one graph (compile time grows with the block count; with block streaming the "
                "blocks are compiled one by one).")}),
        }}

    def compile(self, model, mode="default", dynamic="auto", scope="blocks"):
        return (dataclasses.replace(as_expert_set(model), compile=CompileOptions(mode, dynamic, scope)),)


NODES = {"WanExpertsCompile": WanExpertsCompile}
