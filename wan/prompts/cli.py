"""The official prompt-extension flags of ``generate.py`` and what the pipeline does with them.

``--use_prompt_extend``, ``--prompt_extend_method`` (official default local_qwen), ``--prompt_extend_model``
(official default per method and input: qwen-plus / qwen-vl-max, Qwen2.5_14B / QwenVL2.5_7B) and
``--prompt_extend_target_lang`` (official default zh); the seed is ``--base_seed``, as in the official script.
Local models are looked up in ``$WAN_EXPERTS_MODELS/LLM`` (default ``./models/LLM``) unless a path is given.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from .local_models import METHODS
from .system_prompts import LANGUAGES


@dataclass(frozen=True)
class PromptExtendFlags:
    method: str = "local_qwen"
    model: str | None = None
    target_lang: str = "zh"


def add_prompt_extend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--use_prompt_extend", action="store_true", default=False,
                   help="rewrite the prompt into a detailed one first (official prompt extension)")
    p.add_argument("--prompt_extend_method", default="local_qwen", choices=sorted(METHODS),
                   help="local_qwen: a Qwen model folder in models/LLM; dashscope: Alibaba's service (DASH_API_KEY)")
    p.add_argument("--prompt_extend_model", default=None,
                   help="default: Qwen2.5_14B / QwenVL2.5_7B with an image (local_qwen: a folder name in "
                        "models/LLM or a path), qwen-plus / qwen-vl-max (dashscope)")
    p.add_argument("--prompt_extend_target_lang", default="zh", choices=list(LANGUAGES),
                   help="language of the extended prompt")


def prompt_extend_from_args(args: argparse.Namespace) -> PromptExtendFlags | None:
    if not args.use_prompt_extend:
        return None
    return PromptExtendFlags(args.prompt_extend_method, args.prompt_extend_model, args.prompt_extend_target_lang)


def llm_folder() -> Path:
    return Path(os.environ.get("WAN_EXPERTS_MODELS", "models")) / "LLM"


def extend_for_run(flags: PromptExtendFlags, prompt: str, seed: int, style: str, device, paths=(),
                   tensors=()):
    """The official extension step of ``generate.py``: the image files opened with PIL as the official script does
    (without files: the run's images, [1, 3, H, W] in [-1, 1]); the seed is the run's seed; the system prompts
    are those of the model (``style``: see ``system_prompts.style_of``)."""
    from PIL import Image

    from .extend import LocalOptions, extend_prompt
    from .images import pil_from_tensor

    images = [Image.open(path).convert("RGB") for path in paths] or [
        pil_from_tensor((t[0].permute(1, 2, 0) + 1) / 2) for t in tensors]
    local = LocalOptions(model_dirs=(llm_folder(),), device=device)
    return extend_prompt(prompt, flags.method, flags.model, flags.target_lang, images, seed,
                         style=style, local=local)
