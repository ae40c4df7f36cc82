"""The UMT5 tokenizer: cleaned prompt -> ids + EOS, truncated and padded to the text length (512 for Wan).

Two backends give the same ids: ``sentencepiece`` on the ``spiece.model`` bytes (a tokenizer folder or the
``spiece_model`` tensor of a Comfy-Org file), and the ``tokenizers`` library on a ``tokenizer.json`` (what the
official code reads through transformers). Special-token strings typed in a prompt (``</s>``, ``<pad>``) count as
those tokens, as in transformers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import regex
import torch

from ..errors import CheckpointError
from .text_clean import clean_prompt

log = logging.getLogger("wan_experts")

TEXT_LEN = 512


class SentencePieceBackend:
    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        self.eos_id, self.pad_id = self.sp.eos_id(), max(self.sp.pad_id(), 0)
        specials = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())
                    if self.sp.is_control(i) or self.sp.is_unknown(i)]
        specials = sorted((s for s in specials if s), key=len, reverse=True)
        self._split = regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")") if specials else None

    @property
    def id_count(self) -> int:
        """One more than the largest id this tokenizer can give."""
        return self.sp.get_piece_size()

    def ids(self, text: str) -> list[int]:
        parts = self._split.split(text) if self._split else [text]
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:  # a special token matched by the split
                out.append(self.sp.piece_to_id(part))
            elif part:
                out.extend(self.sp.encode(part))
        return out


class TokenizerJsonBackend:
    def __init__(self, text: str, source: str = "tokenizer.json"):
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_str(text)
        except Exception as exc:  # the tokenizers library raises plain Exception for malformed files
            raise CheckpointError(f"tokenizer '{source}' is not a valid tokenizer.json ({str(exc)[:200]}); use the "
                                  f"google/umt5-xxl tokenizer.json or its spiece.model") from exc
        self.eos_id = self.tok.token_to_id("</s>")
        pad = self.tok.token_to_id("<pad>")
        self.pad_id = 0 if pad is None else pad

    @property
    def id_count(self) -> int:
        """One more than the largest id this tokenizer can give (added tokens included)."""
        return max(self.tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids


@dataclass
class TokenBatch:
    ids: torch.Tensor  # [B, text_len] long, padded with the pad id
    mask: torch.Tensor  # [B, text_len] long, 1 for real tokens (incl. EOS)
    lengths: list[int]


class UMT5Tokenizer:
    def __init__(self, backend, source: str = "", text_len: int = TEXT_LEN):
        if backend.eos_id is None or backend.eos_id < 0:
            raise CheckpointError(f"tokenizer '{source}' has no end-of-sequence token </s>: it is not a T5 "
                                  f"tokenizer. Use the google/umt5-xxl tokenizer (spiece.model or tokenizer.json).")
        self.backend, self.source, self.text_len = backend, source, text_len

    def check_fits(self, vocab: int, encoder: str) -> None:
        """Refuse a tokenizer whose ids go past the encoder's ``vocab`` embedding rows, at load (on a GPU such an
        id is a device-side assert that leaves the process unusable)."""
        count = max(self.backend.id_count, self.backend.eos_id + 1, self.backend.pad_id + 1)
        if count > vocab:
            raise CheckpointError(f"tokenizer '{self.source}' gives ids up to {count - 1}, but the text encoder "
                                  f"'{encoder}' has {vocab} token embeddings: they were not made for each other. "
                                  f"Use the UMT5 tokenizer (google/umt5-xxl spiece.model or tokenizer.json).")

    def ids(self, prompt: str) -> list[int]:
        """Ids of one cleaned prompt, EOS last, cut to ``text_len`` (with a warning)."""
        ids = self.backend.ids(clean_prompt(prompt))
        if len(ids) + 1 > self.text_len:
            log.warning("Prompt has %d tokens; the text encoder reads %d, so the rest is cut off: '...%s'",
                        len(ids) + 1, self.text_len, prompt[-60:])
            ids = ids[: self.text_len - 1]
        return ids + [self.backend.eos_id]

    def __call__(self, prompts: list[str]) -> TokenBatch:
        rows = [self.ids(p) for p in prompts]
        ids = torch.full((len(rows), self.text_len), self.backend.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), self.text_len), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return TokenBatch(ids, mask, [len(r) for r in rows])
