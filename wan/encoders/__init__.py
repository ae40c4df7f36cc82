"""Text encoder (UMT5-XXL + tokenizer) and image encoder (CLIP ViT-H/14 vision tower) of Wan.

May import: ``wan.weights``, ``wan.quant``, ``wan.memory``, ``wan.conditioning``, ``wan.variants``, ``wan.finite``,
``wan.errors``; never the DiT, sampling or the run.
"""
from .clip_vision import ClipVision, load_clip_vision
from .prompts import encode_prompts
from .text_encoder import TextEncoder, load_text_encoder

__all__ = ["ClipVision", "TextEncoder", "encode_prompts", "load_clip_vision", "load_text_encoder"]
