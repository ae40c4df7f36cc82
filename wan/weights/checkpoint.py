"""Open weight files safely and hand back their tensors without copying them.

Supported sources: a ``.safetensors`` file (memory-mapped), a sharded ``*.safetensors.index.json``, a pickle
checkpoint (``.pth``/``.pt``/``.bin``/``.ckpt``, loaded with ``weights_only=True``), or a folder holding any of
those (official Wan-AI and diffusers folders). GGUF files (``.gguf``) are recognised here and read, quantised, by
the DiT loader (``wan.dit.gguf``) and the text-encoder loader (``wan.encoders.t5_gguf``). Model-specific key mapping lives next to each model
(``wan/dit/keys.py``, ``wan/vae/keys.py``, ...); this module only reads files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from ..checks import json_value
from ..errors import CheckpointError
from .files import is_regular_file

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
GGUF_SUFFIX = ".gguf"

# Prefixes that wrappers put in front of a model's own keys (ComfyUI saves, training frameworks).
COMMON_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")


def read_state_dict(path: str | os.PathLike, what: str = "model file", mapped: bool = True) -> dict[str, torch.Tensor]:
    """Return every tensor of ``path`` by name. Safetensors tensors are views of the memory-mapped file, and so are
    a pickle checkpoint's unless ``mapped`` is False (then each tensor is read into memory of its own; for
    safetensors read that way see ``wan.weights.owned``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} not found: '{path}'. Check the path, or put the file in the folder the loader lists.")
    if path.is_dir():
        return read_state_dict(find_weights_in_folder(path, what), what, mapped)
    require_regular_file(path, what)
    name = path.name.lower()
    if name.endswith(INDEX_SUFFIX):
        return _read_index(path, what)
    if name.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path, what)
    if name.endswith(PICKLE_SUFFIXES):
        return _read_pickle(path, what, mapped)
    if is_gguf(path):
        raise CheckpointError(f"{what} '{path.name}' is a GGUF file, which only the DiT loaders (Load Wan DiT, "
                              f"Load Wan 2.2 MoE) and the text-encoder loader (Load Wan Text Encoder) read. Use a "
                              f".safetensors file here.")
    raise CheckpointError(
        f"{what} '{path.name}' has an unknown file type. Use a .safetensors file, a sharded "
        f"*.safetensors.index.json, a .pth/.pt/.bin checkpoint, a .gguf diffusion model, or a model folder."
    )


def require_regular_file(path: Path, what: str) -> None:
    """A weight file must be a regular file: a FIFO or a device would hang the reader or never end."""
    if not is_regular_file(path):
        raise CheckpointError(f"{what} '{path}' is not a regular file; point to the weight file itself.")


def is_gguf(path) -> bool:
    return str(path).lower().endswith(GGUF_SUFFIX)


def find_weights_in_folder(folder: Path, what: str = "model folder") -> Path:
    """The one weight source inside a model folder: an index file, a single safetensors, or a single pickle."""
    indexes = sorted(folder.glob("*" + INDEX_SUFFIX))
    if len(indexes) == 1:
        return indexes[0]
    singles = sorted(folder.glob("*" + SAFETENSORS_SUFFIX))
    if len(singles) == 1 and not indexes:
        return singles[0]
    pickles = sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if not indexes and not singles and len(pickles) == 1:
        return pickles[0]
    ggufs = sorted(folder.glob("*" + GGUF_SUFFIX))
    if not indexes and not singles and not pickles and len(ggufs) == 1:
        return ggufs[0]
    found = [p.name for p in sorted(folder.iterdir())][:12]
    raise CheckpointError(
        f"{what} '{folder}' does not hold exactly one set of weights (found: {found or 'nothing'}). "
        f"Point to the weight file itself, or to a folder with one .safetensors, one *.safetensors.index.json "
        f"or one .pth file."
    )


def strip_prefix(sd: dict[str, torch.Tensor], prefixes: Iterable[str] = COMMON_PREFIXES) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix shared by every key (e.g. ComfyUI's ``model.diffusion_model.``)."""
    for prefix in prefixes:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError variants
        raise CheckpointError(
            f"{what} '{path.name}' is not a readable safetensors file ({exc}). It may be truncated or still "
            f"downloading: download it again and compare its size with the published one."
        ) from exc


def _read_index(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        weight_map = json_value(path.read_bytes(), f"{what} index '{path.name}'", CheckpointError)["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("'weight_map' must map tensor names to shard file names")
    except (OSError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{what} index '{path.name}' is not a valid safetensors index ({exc}).") from exc
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = path.parent / shard
        if not shard_path.exists():
            raise CheckpointError(
                f"{what} index '{path.name}' names shard '{shard}', which is missing from '{path.parent}'. "
                f"Download every shard listed in the index."
            )
        out.update(_read_safetensors(shard_path, what))
    missing = [k for k in weight_map if k not in out]
    if missing:
        raise CheckpointError(f"{what} index '{path.name}' lists tensors that no shard holds, e.g. {missing[:3]}.")
    return out


def _read_pickle(path: Path, what: str, mapped: bool = True) -> dict[str, torch.Tensor]:
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mapped)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # old (non-zip) format cannot be memory-mapped
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{what} '{path.name}' could not be loaded as a weights-only checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Only plain state dicts are accepted; "
            f"a truncated download or a file with pickled Python objects is refused. Use a .safetensors file."
        ) from exc
    return _as_state_dict(obj, path, what)


def _as_state_dict(obj, path: Path, what: str) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and len(obj) <= 4:
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"{what} '{path.name}' is not a state dict: it holds a {type(obj).__name__}. "
            f"Give a file saved from model.state_dict()."
        )
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{what} '{path.name}' is a dict without tensors, not a state dict of weights.")
    return tensors


# What a state dict holds, guessed from marker keys, so a loader handed the wrong file can say what it got.
_KIND_MARKERS = (
    ("a LoRA", ("lora_up", "lora_down", "lora_A", "lora_B", ".alpha", ".diff_b", ".diff_m", ".lokr_", ".hada_")),
    ("a Wan DiT (diffusion model)", ("head.modulation", "scale_shift_table", "condition_embedder.")),
    ("a Wan VAE", ("decoder.conv1.", "decoder.head.", "post_quant_conv.", "decoder.conv_in.", "decoder.up_blocks.")),
    ("a text encoder (UMT5)", ("shared.weight", "encoder.block.0.layer.0.SelfAttention", "token_embedding.weight")),
    ("a CLIP vision model", ("vision_model.", "visual.", "textual.")),
)

# The loader (node) to use for each kind, for error messages.
KIND_LOADERS = {
    "a LoRA": "the Wan LoRA node (Wan LoRA, or Wan 2.2 LoRA Pair), from models/loras",
    "a Wan DiT (diffusion model)": "the DiT loader (Load Wan DiT), from models/diffusion_models",
    "a Wan VAE": "the VAE loader (Load Wan VAE), from models/vae",
    "a text encoder (UMT5)": "the text-encoder loader (Load Wan Text Encoder), from models/text_encoders",
    "a CLIP vision model": "the CLIP vision loader (Load Wan CLIP Vision), from models/clip_vision",
}


# What a GGUF file holds, from its ``general.architecture`` (llama.cpp names the T5 encoder "t5encoder").
GGUF_ARCHITECTURE_KINDS = {
    "wan": "a Wan DiT (diffusion model)", "t5encoder": "a text encoder (UMT5)", "t5": "a text encoder (UMT5)",
}


def guess_kind(keys) -> str | None:
    """A short description of what kind of model the keys belong to, or None when unknown."""
    keys = list(keys)
    for kind, markers in _KIND_MARKERS:
        if any(m in k for k in keys for m in markers):
            return kind
    return None


def wrong_kind_message(path, expected: str, keys) -> str:
    """Error text for a file of the wrong kind: what was expected, what it looks like, where it belongs."""
    kind = guess_kind(keys)
    name = Path(path).name
    sample = ", ".join(sorted(keys)[:4])
    if kind is None:
        return f"'{name}' is not {expected}: none of its keys are known (first keys: {sample})."
    where = KIND_LOADERS.get(kind)
    hint = f" Load it with {where}." if where else ""
    return f"'{name}' is not {expected}: it looks like {kind} (keys such as {sample}).{hint}"
