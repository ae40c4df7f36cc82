"""Find the UMT5 tokenizer for a text-encoder checkpoint.

Sources, in order: an explicit path (``spiece.model``, ``tokenizer.json``, a tokenizer folder, or a safetensors file
holding ``spiece_model``); the ``spiece_model`` tensor inside the checkpoint (Comfy-Org files); a tokenizer folder
next to the weights (official Wan folders keep it in ``google/umt5-xxl/``; transformers folders in the folder itself).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import read_state_dict
from ..errors import CheckpointError
from ..files import MiB, read_regular_file
from .t5_keys import TOKENIZER_KEY
from .tokenizer import SentencePieceBackend, TokenizerJsonBackend, UMT5Tokenizer

TOKENIZER_JSON = "tokenizer.json"
SPIECE_MODEL = "spiece.model"
NEARBY_FOLDERS = (".", "google/umt5-xxl", "umt5-xxl", "tokenizer")
TOKENIZER_LIMIT = 64 * MiB  # the UMT5 tokenizer.json is 16 MB, its spiece.model 4 MB


def find_tokenizer(checkpoint: Path, sd: dict[str, torch.Tensor], explicit=None) -> UMT5Tokenizer:
    if explicit not in (None, ""):
        return tokenizer_from_path(Path(explicit))
    if TOKENIZER_KEY in sd:
        return tokenizer_from_tensor(sd[TOKENIZER_KEY], f"{checkpoint.name}:{TOKENIZER_KEY}")
    base = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for sub in NEARBY_FOLDERS:
        folder = (base / sub).resolve()
        if _tokenizer_file(folder) is not None:
            return tokenizer_from_path(folder)
    raise CheckpointError(
        f"No tokenizer found for text encoder '{checkpoint.name}': it holds no '{TOKENIZER_KEY}' tensor and no "
        f"{SPIECE_MODEL} / {TOKENIZER_JSON} lies in {', '.join(repr(str(base / s)) for s in NEARBY_FOLDERS)}. "
        f"Use the Comfy-Org umt5_xxl_*.safetensors (tokenizer inside), put the official 'google/umt5-xxl' folder "
        f"next to the .pth, or pass the tokenizer path."
    )


def tokenizer_from_path(path: Path) -> UMT5Tokenizer:
    if not path.exists():
        raise CheckpointError(f"tokenizer path '{path}' does not exist. Give a spiece.model, a tokenizer.json, a "
                              f"tokenizer folder, or a text-encoder .safetensors with the tokenizer inside.")
    if path.is_dir():
        file = _tokenizer_file(path)
        if file is None:
            raise CheckpointError(f"tokenizer folder '{path}' holds neither {TOKENIZER_JSON} nor {SPIECE_MODEL}.")
        return tokenizer_from_path(file)
    if path.name.endswith(".json"):
        text = read_regular_file(path, TOKENIZER_LIMIT, "tokenizer file").decode("utf-8", errors="replace")
        return UMT5Tokenizer(TokenizerJsonBackend(text, str(path)), str(path))
    if path.name.endswith(".safetensors"):
        sd = read_state_dict(path, what="tokenizer file")
        if TOKENIZER_KEY not in sd:
            raise CheckpointError(f"'{path.name}' holds no '{TOKENIZER_KEY}' tensor, so it carries no tokenizer.")
        return tokenizer_from_tensor(sd[TOKENIZER_KEY], f"{path.name}:{TOKENIZER_KEY}")
    return _sentencepiece(read_regular_file(path, TOKENIZER_LIMIT, "tokenizer file"), str(path))


def tokenizer_from_tensor(t: torch.Tensor, source: str) -> UMT5Tokenizer:
    return _sentencepiece(t.contiguous().cpu().numpy().tobytes(), source)


def _sentencepiece(proto: bytes, source: str) -> UMT5Tokenizer:
    try:
        backend = SentencePieceBackend(proto)
    except RuntimeError as exc:  # sentencepiece reports a bad model proto as RuntimeError
        raise CheckpointError(f"tokenizer '{source}' is not a sentencepiece model ({exc}).") from exc
    return UMT5Tokenizer(backend, source)


def _tokenizer_file(folder: Path) -> Path | None:
    for name in (TOKENIZER_JSON, SPIECE_MODEL):
        if (folder / name).is_file():
            return folder / name
    return None
