"""``extend_prompt``: the official Wan prompt extension (Dashscope service or a local Qwen model) with the official
fallback: when the service or the model fails, the original prompt is kept and the log says why.

Settings that cannot work (an unknown method or language, a missing model folder, the Dashscope SDK not
installed) raise InputError before anything runs.
"""
from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, replace
from functools import partial

import torch
from PIL import Image

from ..errors import InputError
from .local_models import METHODS, default_model, find_local_model
from .local_qwen import DECODING, MAX_NEW_TOKENS, ask_local_qwen
from .service import DashscopeOptions, ask_dashscope, load_sdk
from .system_prompts import LANGUAGES, STYLES, system_prompt

log = logging.getLogger("wan_experts")


@dataclass(frozen=True)
class ExtendedPrompt:
    """What an extension produced and what it used."""

    prompt: str  # the prompt to encode: the rewrite, or the original when extending failed
    original: str
    extended: bool  # False: the original prompt was kept (``message`` says why)
    method: str
    model: str  # the service model name, or the local model folder
    target_lang: str
    seed: int
    system_prompt: str
    message: str = ""


@dataclass(frozen=True)
class LocalOptions:
    """Local Qwen settings: where model folders are, where the model runs, how it decodes."""

    model_dirs: tuple = ()  # folders holding model folders (models/LLM)
    device: torch.device | str | None = None  # None: cuda when available, else cpu
    decoding: str = "sample"  # "sample" (the model's own sampling, seeded) | "greedy"
    max_new_tokens: int = MAX_NEW_TOKENS
    paths: bool = True  # a model name may also be a folder path (False: names only, for names from a graph)


def extend_prompt(prompt: str, method: str = "local_qwen", model: str | None = None, target_lang: str = "zh",
                  image=None, seed: int = -1, *, style: str = "wan2.2", local: LocalOptions = LocalOptions(),
                  dashscope: DashscopeOptions = DashscopeOptions()) -> ExtendedPrompt:
    """Rewrite ``prompt`` for Wan. ``image``: None, a PIL image, or a list (start[, end] frame). ``seed`` < 0 picks
    one at random, as the official code. ``style``: which official system prompts ("wan2.2" or "wan2.1")."""
    images = _image_list(image)
    _check(method, target_lang, style, local.decoding)
    seed = seed if seed >= 0 else random.randint(0, sys.maxsize)
    system = system_prompt(style, target_lang, len(images), prompt)
    name = model or default_model(method, bool(images))
    if method == "dashscope":
        load_sdk()
        dashscope.url()  # an address the caller may not use: InputError before anything runs
        run = partial(ask_dashscope, name, system, prompt, images, seed, dashscope)
    else:
        found = find_local_model(name, local.model_dirs, bool(images), local.paths)
        name = found.path
        run = partial(ask_local_qwen, found, system, prompt, images, seed, style, local.decoding, local.device,
                      local.max_new_tokens)
    result = ExtendedPrompt(prompt, prompt, False, method, name, target_lang, seed, system)
    log.info("Extending prompt with %s (%s, %s) ...", method, name, target_lang)
    return _attempt(result, run)


def _attempt(result: ExtendedPrompt, run) -> ExtendedPrompt:
    try:
        text = run()
    except InputError:
        raise
    except Exception as exc:  # the official fallback: any failure of the service or the model keeps the prompt
        return _fallback(result, f"{type(exc).__name__}: {exc}")
    if not text.strip():
        return _fallback(result, "the model returned an empty prompt")
    log.info("Extended prompt: %s", text)
    return replace(result, prompt=text, extended=True, message="ok")


def _fallback(result: ExtendedPrompt, reason: str) -> ExtendedPrompt:
    log.warning("Extending prompt failed (%s, %s): %s. Falling back to the original prompt.", result.method,
                result.model, reason)
    return replace(result, message=reason)


def _image_list(image) -> list:
    images = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
    for item in images:
        if not isinstance(item, Image.Image):
            raise InputError(f"prompt extension: image must be a PIL image (or a list of them); got {type(item)}")
    if len(images) > 2:
        raise InputError(f"prompt extension takes a start image and at most an end image; got {len(images)} images")
    return images


def _check(method: str, target_lang: str, style: str, decoding: str) -> None:
    for what, value, allowed in (("method", method, METHODS), ("target_lang", target_lang, LANGUAGES),
                                 ("style", style, STYLES), ("decoding", decoding, DECODING)):
        if value not in allowed:
            raise InputError(f"prompt extension: {what} '{value}' is not one of {', '.join(allowed)}")
