"""Prompt extension node: the official Wan rewrite of a short prompt into a long, detailed one, by a local Qwen model
(models/LLM) or the Dashscope service, shown on the node and passed on as a STRING (e.g. into Wan Text Encode)."""
from __future__ import annotations

import re
import sys
import torch

from ..wan.errors import InputError
from ..wan.prompts import (DECODING, LANGUAGES, METHODS, STYLES, DashscopeOptions, LocalOptions, extend_prompt,
                           pil_from_tensor)
from ..wan.prompts.service import address_problem
from . import host

CATEGORY = "Wan Experts/conditioning"
MODEL_TOOLTIP = (
    "Empty: the official default (local_qwen: Qwen2.5-14B-Instruct, or Qwen2.5-VL-7B-Instruct with an image; "
    "dashscope: qwen-plus, or qwen-vl-max with an image). local_qwen: a folder name in models/LLM (e.g. "
    "Qwen2.5-7B-Instruct), an official short name (Qwen2.5_7B, QwenVL2.5_3B) or a Hugging Face repo id already in "
    "the local cache; never a path; nothing is downloaded. dashscope: a service model name (e.g. qwen-max).")
# A model is named, never given as a path: a folder in models/LLM, an official short name, a repo id, a service model
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


class WanExpertsPromptExtend:
    DISPLAY_NAME = "Wan Prompt Extend"
    DESCRIPTION = (
        "Rewrites a short prompt into the long, detailed kind Wan was trained on, as the official --use_prompt_extend: "
        "the official system prompts, a local Qwen2.5 model (Qwen2.5-VL when an image is connected, which the model "
        "then sees) from models/LLM, or Alibaba's Dashscope service (key from DASH_API_KEY). If the model or the "
        "service fails, the original prompt is passed on and the log says why.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = ("The extended prompt (the original one when extending failed), e.g. for Wan Text Encode.",)
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "The prompt to extend. May be empty with an image (Wan 2.2 then describes the image).")}),
                "method": (list(METHODS), {"default": "local_qwen", "tooltip": (
                    "local_qwen: a Qwen model from models/LLM on this machine. dashscope: Alibaba's service "
                    "(pip install dashscope; API key in DASH_API_KEY).")}),
                "model": ("STRING", {"default": "", "tooltip": MODEL_TOOLTIP}),
                "target_lang": (list(LANGUAGES), {"default": "zh", "tooltip": (
                    "Language of the extended prompt (official default: zh). Wan understands both.")}),
                "seed": ("INT", {"default": 0, "min": 0, "max": sys.maxsize, "tooltip": (
                    "Seed of the rewrite (sent to Dashscope; seeds the local model's sampling).")}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": (
                    "Optional start image (the first of the batch): the model sees it (image-to-video rewrite).")}),
                "end_image": ("IMAGE", {"tooltip": "Optional end image (first-last-frame video), with image."}),
                "style": (list(STYLES), {"default": "wan2.2", "tooltip": (
                    "Which official system prompts: wan2.2 (Wan 2.2 A14B), wan2.2-ti2v (Wan 2.2 TI2V-5B: with an "
                    "image, the image prompt even when the prompt is empty) or wan2.1 (Wan 2.1 models).")}),
                "decoding": (list(DECODING), {"default": "sample", "tooltip": (
                    "local_qwen: 'sample' uses the model's own sampling settings (as the official code), seeded; "
                    "'greedy' always takes the likeliest token (the model's repetition penalty still applies).")}),
                "device": (["gpu", "cpu"], {"default": "gpu", "tooltip": (
                    "local_qwen: where the model runs; it is freed right after the rewrite.")}),
                "api_key": ("STRING", {"default": "", "tooltip": (
                    "dashscope: API key. Empty: the DASH_API_KEY environment variable (recommended: a key typed "
                    "here is left out of videos saved by Save Wan Video, but stays in the workflow you save and in "
                    "ComfyUI's history).")}),
                "base_url": ("STRING", {"default": "", "tooltip": (
                    "dashscope: service address. Empty: DASH_API_URL, else the Beijing endpoint; international "
                    "accounts: https://dashscope-intl.aliyuncs.com/api/v1")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model=None, base_url=None):
        """No paths, no addresses outside the service, checked while ComfyUI validates the graph."""
        return model_problem(model) or url_problem(base_url) or True

    def extend(self, prompt, method, model, target_lang, seed, image=None, end_image=None, style="wan2.2",
               decoding="sample", device="gpu", api_key="", base_url=""):
        problem = model_problem(model) or url_problem(base_url)
        if problem:
            raise InputError(problem)
        host.check_interrupted()
        images = _images(image, end_image)
        local = LocalOptions(model_dirs=tuple(host.model_folders("LLM")), decoding=decoding,
                             device=host.compute_device() if device == "gpu" else torch.device("cpu"), paths=False)
        service = DashscopeOptions(api_key=api_key.strip() or None, base_url=base_url.strip() or None,
                                   any_address=False)
        try:
            result = extend_prompt(prompt, method, model.strip() or None, target_lang, images, seed, style=style,
                                   local=local, dashscope=service)
        finally:
            host.free_memory()
        return {"ui": {"text": [result.prompt]}, "result": (result.prompt,)}


def model_problem(model) -> str | None:
    """A model from a graph must be a name, not a path on the server."""
    name = model.strip() if isinstance(model, str) else model
    if name in (None, "") or (isinstance(name, str) and MODEL_NAME.fullmatch(name) and ".." not in name):
        return None
    return (f"Wan Prompt Extend: model '{str(model)[:80]}' is not a model name; give a folder name in models/LLM, an "
            f"official short name (Qwen2.5_7B), a Hugging Face repo id (Qwen/Qwen2.5-7B-Instruct) or a Dashscope "
            f"model, never a path")


def url_problem(base_url) -> str | None:
    """The Dashscope address from a graph must be the service's own: the server's API key is sent there."""
    url = base_url.strip() if isinstance(base_url, str) else base_url
    problem = None if url in (None, "") else address_problem(url)
    return problem and f"Wan Prompt Extend: {problem}"


def _images(image, end_image) -> list:
    if end_image is not None and image is None:
        raise InputError("Wan Prompt Extend: end_image needs image (the start frame) as well.")
    return [pil_from_tensor(batch[0]) for batch in (image, end_image) if batch is not None]


NODES = {"WanExpertsPromptExtend": WanExpertsPromptExtend}
