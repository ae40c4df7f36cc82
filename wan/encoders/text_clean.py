"""Prompt cleaning of the official tokenizer wrapper (``clean='whitespace'``): fix mojibake and HTML entities, then
collapse whitespace runs to single spaces and strip the ends."""
from __future__ import annotations

import html
import logging
import unicodedata

import regex

log = logging.getLogger("wan_experts")

try:
    import ftfy
except ImportError:  # optional: without it only the HTML and whitespace steps run
    ftfy = None

_WHITESPACE = regex.compile(r"\s+")
_warned = []


def clean_prompt(text: str) -> str:
    return _WHITESPACE.sub(" ", _basic_clean(text)).strip()


def _basic_clean(text: str) -> str:
    if ftfy is not None:
        text = ftfy.fix_text(text)
    else:
        _warn_once()
        text = unicodedata.normalize("NFC", text)
    return html.unescape(html.unescape(text)).strip()


def _warn_once() -> None:
    if not _warned:
        _warned.append(True)
        log.warning("The 'ftfy' package is not installed: prompts are cleaned without its text fixes, so a prompt "
                    "with broken Unicode may tokenize differently from the official code. Install it with "
                    "'pip install ftfy'.")
