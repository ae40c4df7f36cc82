"""The CLI's LoRA flags: ``--lora FILE[:STRENGTH]`` (repeatable) for every expert, ``--lora_high`` /
``--lora_low`` for one Wan 2.2 A14B expert; checked before any model is loaded."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .apply import LoraChoice
from .demo import DEMO

FLAGS = {"both": "--lora", "high": "--lora_high", "low": "--lora_low"}


def lora_choices(values: dict[str, list[str]], moe: bool, demo: bool) -> tuple[LoraChoice, ...]:
    """``values``: expert -> the flag's values, in order. ``demo`` (with --demo): a random LoRA for the demo models."""
    out = []
    for expert, items in values.items():
        if items and expert != "both" and not moe:
            raise InputError(f"{FLAGS[expert]} is for the Wan 2.2 A14B two-expert tasks (t2v-A14B, i2v-A14B); "
                             f"use --lora for a single model")
        out += [parse_lora(value, expert, demo) for value in items]
    return tuple(out)


def parse_lora(value: str, expert: str = "both", demo: bool = False) -> LoraChoice:
    """``FILE`` or ``FILE:STRENGTH``; an existing file whose name holds ':' (or a Windows drive letter) stays whole."""
    path, strength = value, 1.0
    head, sep, tail = value.rpartition(":")
    if sep and head and value != DEMO and not Path(value).is_file() and not _drive_letter(head, tail):
        try:
            path, strength = head, float(tail)
        except ValueError:
            raise InputError(f"{FLAGS[expert]} '{value}': the strength after ':' must be a number, e.g. "
                             f"{head}:0.8") from None
    if path == DEMO:
        if not demo:
            raise InputError(f"{FLAGS[expert]} demo: a random demo LoRA exists only with --demo; give a LoRA file")
        return LoraChoice(Path(DEMO), strength, expert)
    if not Path(path).is_file():
        raise InputError(f"{FLAGS[expert]} '{path}' does not exist or is not a file")
    return LoraChoice(Path(path), strength, expert)


def _drive_letter(head: str, tail: str) -> bool:
    return len(head) == 1 and tail.startswith(("\\", "/"))
