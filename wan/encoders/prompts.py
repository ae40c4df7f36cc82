"""Positive and negative prompts to ``TextEmbeds``: the official default negative prompt when none is given."""
from __future__ import annotations

import logging

from ..conditioning import TextEmbeds
from ..errors import InputError
from ..variants import DEFAULT_NEGATIVE_PROMPT
from .text_encoder import TextEncoder

log = logging.getLogger("wan_experts")


def encode_prompts(encoder: TextEncoder, positive: str, negative: str = "") -> TextEmbeds:
    """Encode both prompts in one batch. An empty positive prompt is allowed (unconditional) but warned about."""
    for name, text in (("positive", positive), ("negative", negative)):
        if not isinstance(text, str):
            raise InputError(f"the {name} prompt must be text; got {type(text).__name__}")
    if not positive.strip():
        log.warning("The positive prompt is empty: the video follows no text (the model's unconditional output).")
    if not negative.strip():
        negative = DEFAULT_NEGATIVE_PROMPT
    both = encoder.encode([positive, negative])
    return TextEmbeds(positive=both[:1], negative=both[1:], positive_prompts=[positive], negative_prompts=[negative])
