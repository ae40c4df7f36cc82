"""Find the UMT5 tokenizer for a text-encoder checkpoint.

Sources, in order: an explicit path (``spiece.model``, ``tokenizer.json``, a tokenizer folder, or a safetensors file
holding ``spiece_model``); the tokenizer inside the checkpoint (the ``spiece_model`` tensor of Comfy-Org files, the
``tokenizer.ggml.*`` metadata of GGUF files); a tokenizer folder next to the weights (official Wan folders keep it in
``google/umt5-xxl/``; transformers folders in the folder itself).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..weights.checkpoint import is_gguf, read_state_dict
from ..errors import CheckpointError
from ..weights.files import MiB, read_regular_file
from .t5_keys import TOKENIZER_KEY
from .tokenizer import SentencePieceBackend, TokenizerJsonBackend, UMT5Tokenizer

TOKENIZER_JSON = "tokenizer.json"
SPIECE_MODEL = "spiece.model"
NEARBY_FOLDERS = (".", "google/umt5-xxl", "umt5-xxl", "tokenizer")
TOKENIZER_LIMIT = 64 * MiB  # the UMT5 tokenizer.json is 16 MB, its spiece.model 4 MB


def find_tokenizer(checkpoint: Path, sd: dict[str, torch.Tensor], explicit=None,
                   embedded: Callable[[], UMT5Tokenizer | None] | None = None) -> UMT5Tokenizer:
    """``embedded``: builds the tokenizer a file carries in another form than a tensor (GGUF metadata); None when
    the file carries none."""
    if explicit not in (None, ""):
        return tokenizer_from_path(Path(explicit))
    if TOKENIZER_KEY in sd:
        return tokenizer_from_tensor(sd[TOKENIZER_KEY], f"{checkpoint.name}:{TOKENIZER_KEY}")
    inside = embedded() if embedded is not None else None
    if inside is not None:
        return inside
    base = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for sub in NEARBY_FOLDERS:
        folder = (base / sub).resolve()
        if _tokenizer_file(folder) is not None:
            return tokenizer_from_path(folder)
    raise CheckpointError(_not_found(checkpoint, base))


def _not_found(checkpoint: Path, base: Path) -> str:
    nearby = ", ".join(repr(str(base / s)) for s in NEARBY_FOLDERS)
    if is_gguf(checkpoint):
        return (f"No tokenizer found for text encoder '{checkpoint.name}': the GGUF file carries no tokenizer "
                f"metadata (tokenizer.ggml.*) and no {SPIECE_MODEL} / {TOKENIZER_JSON} lies in {nearby}. Pick the "
                f"UMT5 tokenizer file (spiece.model or tokenizer.json of google/umt5-xxl, put in "
                f"models/text_encoders) in the loader's 'tokenizer' input, or pass the tokenizer path.")
    return (f"No tokenizer found for text encoder '{checkpoint.name}': it holds no '{TOKENIZER_KEY}' tensor and no "
            f"{SPIECE_MODEL} / {TOKENIZER_JSON} lies in {nearby}. Use the Comfy-Org umt5_xxl_*.safetensors "
            f"(tokenizer inside), put the official 'google/umt5-xxl' folder next to the .pth, or pass the "
            f"tokenizer path.")


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
    return tokenizer_from_proto(read_regular_file(path, TOKENIZER_LIMIT, "tokenizer file"), str(path))


def tokenizer_from_tensor(t: torch.Tensor, source: str) -> UMT5Tokenizer:
    return tokenizer_from_proto(t.contiguous().cpu().numpy().tobytes(), source)


def tokenizer_from_proto(proto: bytes, source: str) -> UMT5Tokenizer:
    """A tokenizer from the bytes of a sentencepiece model file."""
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
