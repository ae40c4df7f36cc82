"""The official system prompts of the Wan prompt extender and the official rule for picking one.

The texts live in ``data/system_prompts.json``, copied unchanged from the Wan 2.1 and Wan 2.2 repositories
(Copyright the Alibaba Wan Team, Apache-2.0; see ``data/NOTICE``). Wan 2.1 rewrites in the style of its LM / VL
prompts (one for text, one for a start image, one for a first and a last frame); Wan 2.2 uses its "film director"
prompts (text, a start image, and a start image without any prompt). Wan 2.2 TI2V-5B has its own official rule
(style ``wan2.2-ti2v``): with an image it always takes the start-image prompt, also when the prompt is empty.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).parent / "data" / "system_prompts.json"
TI2V = "wan2.2-ti2v"
STYLES = ("wan2.2", "wan2.1", TI2V)  # TI2V takes the texts of wan2.2
LANGUAGES = ("zh", "en")


@lru_cache(maxsize=1)
def _table() -> dict:
    with open(DATA_FILE, encoding="utf-8") as f:
        return json.load(f)["prompts"]


def style_of(version: str, task: str) -> str:
    """The system-prompt style of a model: ``wan2.1``, ``wan2.2``, or ``wan2.2-ti2v`` for TI2V-5B."""
    return TI2V if task == "ti2v" else f"wan{version}"


def prompt_kind(style: str, n_images: int, prompt: str) -> str:
    """``t2v`` without images, ``i2v`` with one (Wan 2.2 A14B: ``i2v_empty`` when the prompt is empty; TI2V-5B
    never), ``flf2v`` with a first and a last frame (only Wan 2.1 has that instruction; Wan 2.2 borrows it)."""
    if n_images == 0:
        return "t2v"
    if n_images > 1:
        return "flf2v"
    return "i2v_empty" if style == "wan2.2" and not prompt else "i2v"


def system_prompt(style: str, target_lang: str, n_images: int, prompt: str) -> str:
    """The instruction the official extender sends for this style, output language and input."""
    kind = prompt_kind(style, n_images, prompt)
    table = _table()
    texts = table["wan2.2" if style == TI2V else style].get(kind) or table["wan2.1"][kind]
    return texts[target_lang]
