"""The Wan text encoder: UMT5 encoder + its tokenizer, loaded from any file layout users have.

``encode(prompts)`` returns [B, 512, dim] float32 (on the CPU): the encoder states of each prompt's tokens (incl.
EOS) and exact zeros after them, as the official pipeline feeds the DiT. The encoder runs only over the longest
prompt of the batch: padded keys are masked out and the position bias depends on offsets only, so the kept rows
are those of a full 512-token pass.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

from ..weights.checkpoint import is_gguf, read_state_dict, require_regular_file, wrong_kind_message
from ..errors import CheckpointError, InputError
from ..finite import check_output
from ..quant.fp8 import is_marker
from .placement import running_on
from .t5 import UMT5Config, UMT5Encoder
from .t5_keys import TOKENIZER_KEY, has_relative_bias_in_every_block, normalize_keys
from .tokenizer import UMT5Tokenizer
from .tokenizer_source import find_tokenizer
from ..weights.assign import build_with_weights, compute_dtype, official_file_in, split_fp8_scales
from ..weights.owned import converts_most, in_dtype, read_owned

log = logging.getLogger("wan_experts")

OFFICIAL_FILE_GLOB = "models_t5*.pth"


class TextEncoder(nn.Module):
    """``WAN_TEXT_ENCODER``. ``run_device``: where ``encode`` runs (None: where the weights are); unless
    ``keep_loaded``, the weights go back to where they were after each call."""

    def __init__(self, model: UMT5Encoder, tokenizer: UMT5Tokenizer, dtype: torch.dtype, source: str = "",
                 layout: str = ""):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.compute_dtype, self.source, self.layout = dtype, source, layout
        self.run_device: torch.device | None = None
        self.keep_loaded = True

    @property
    def dim(self) -> int:
        return self.model.config.dim

    @property
    def text_len(self) -> int:
        return self.tokenizer.text_len

    @torch.no_grad()
    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"text encoder: expected a non-empty list of prompt strings, got {prompts!r:.80}")
        tokens = self.tokenizer(prompts)
        longest = max(tokens.lengths)
        with running_on(self.model, self.run_device, stay=self.keep_loaded) as device:
            ids, mask = tokens.ids[:, :longest].to(device), tokens.mask[:, :longest].to(device)
            states = self.model(ids, mask).float().cpu()
        check_output(states, "the text encoder", [self.model], self.compute_dtype)
        out = torch.zeros(len(prompts), self.text_len, self.dim)
        for i, n in enumerate(tokens.lengths):
            out[i, :n] = states[i, :n]
        return out


def load_text_encoder(path, tokenizer=None, dtype=None, device="cpu", sharding=None) -> TextEncoder:
    """Load a UMT5 text encoder: official ``.pth`` (or the official model folder holding it), Comfy-Org
    ``umt5_xxl_*.safetensors`` (fp16/bf16/fp8/scaled fp8), a transformers ``UMT5EncoderModel`` folder, or a GGUF
    file (llama.cpp ``t5encoder``: quantised Linear weights stay quantised, see ``t5_gguf``).

    ``tokenizer``: explicit tokenizer path; None finds it (see ``tokenizer_source``). ``dtype``: compute dtype
    (None/"default": bf16 as the official code, fp32 for an fp32 file). ``device``: where the weights are put.
    ``sharding``: a ``wan.distributed.FsdpSharding`` to load only this rank's shard of every weight (FSDP).
    """
    path = official_file_in(Path(path), OFFICIAL_FILE_GLOB)
    if is_gguf(path):
        return _load_gguf(path, tokenizer, dtype, device, sharding)
    sd, layout = normalize_keys(read_state_dict(path, what="text encoder file"))
    if layout is None:
        raise CheckpointError(wrong_kind_message(path, "a UMT5 text encoder", sd.keys()))
    tok = find_tokenizer(path, sd, tokenizer)
    scaled = any(is_marker(k) for k in sd)
    sd, scales = split_fp8_scales({k: v for k, v in sd.items() if k != TOKENIZER_KEY})
    config, compute = _config_and_dtype(path, sd, dtype)
    if converts_most(sd, compute):  # e.g. an fp16 file computing in bf16: read it again, converted as it arrives
        del sd
        owned = normalize_keys(read_owned(path, "text encoder file", in_dtype(compute)))[0]
        sd, scales = split_fp8_scales({k: v for k, v in owned.items() if k != TOKENIZER_KEY})
    model = build_with_weights(lambda: UMT5Encoder(config), sd, scales, compute, path, "UMT5 text encoder",
                               sharding=sharding)
    layout += " (scaled fp8)" if scaled or scales else ""
    return _finish(model, tok, compute, path, layout, device)


def _load_gguf(path: Path, tokenizer, dtype, device, sharding) -> TextEncoder:
    from .t5_gguf import read_gguf_text_encoder

    require_regular_file(path, "text encoder file")
    gguf = read_gguf_text_encoder(path)
    tok = find_tokenizer(path, {}, tokenizer, embedded=gguf.embedded_tokenizer)
    config, compute = _config_and_dtype(path, gguf.shapes(), dtype)
    embedding = gguf.kept_embedding(compute) if sharding is None else None  # FSDP shards a plain table

    def build() -> UMT5Encoder:
        model = UMT5Encoder(config)
        if embedding is not None:
            model.token_embedding = embedding
        return model

    model = build_with_weights(build, gguf.dequantized(compute), {}, compute, path, "UMT5 text encoder",
                               gguf.quantized, sharding=sharding)
    return _finish(model, tok, compute, path, gguf.layout, device)


def _config_and_dtype(path: Path, sd: dict[str, torch.Tensor], dtype) -> tuple[UMT5Config, torch.dtype]:
    """The encoder's sizes and compute dtype, read off the tensors (or their shape placeholders)."""
    if not has_relative_bias_in_every_block(sd):
        raise CheckpointError(f"'{path.name}' is a T5 encoder with a position bias in its first block only (T5 v1.1 "
                              f"/ FLAN-T5). Wan needs UMT5-XXL, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors.")
    config = UMT5Config.from_state_dict(sd)
    stored = sd["blocks.0.attn.q.weight"].dtype  # GGUF blocks (uint8) and fp8 compute in bf16 by default
    # fp16 overflows in T5 (the official code runs it in bf16): an fp16 file computes in bf16 unless asked otherwise
    return config, compute_dtype(dtype, torch.bfloat16 if stored == torch.float16 else stored)


def _finish(model: UMT5Encoder, tok: UMT5Tokenizer, compute: torch.dtype, path: Path, layout: str,
            device) -> TextEncoder:
    tok.check_fits(model.config.vocab, path.name)
    encoder = TextEncoder(model, tok, compute, str(path), layout).to(device)
    log.info("Loaded UMT5 text encoder (dim %d, %d layers) from %s [%s], tokenizer %s, compute %s",
             model.config.dim, model.config.num_layers, path.name, layout, tok.source,
             str(compute).replace("torch.", ""))
    return encoder
