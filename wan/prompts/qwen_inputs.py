"""Model inputs for a local Qwen prompt rewrite, as the official extender builds them with the Hugging Face
tokenizer (Qwen2.5) or processor (Qwen2.5-VL).

The Qwen2.5-VL processor is assembled here from its parts (tokenizer, image processor, chat template) because the
processor class of recent ``transformers`` refuses to load without torchvision even for still images: the chat
text is rendered with the processor's template, each image placeholder is repeated once per merged image patch,
and the image token positions are marked for the model's 3-D rotary positions where the model asks for them. The
pixel values are computed as the official (torchvision) image processor computes them (``qwen_pixels``), whether
or not torchvision is installed.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checks import json_value
from .images import qwen_vl_image
from .qwen_pixels import qwen_pixels, supported
from .messages import local_vision_messages, text_messages

IMAGE_TOKEN = "<|image_pad|>"


@dataclass
class QwenParts:
    model: torch.nn.Module
    tokenizer: object
    image_processor: object | None  # Qwen2.5-VL only
    chat_template: str | None  # the processor's template (Qwen2.5-VL); None: the tokenizer's own


def chat_inputs(parts: QwenParts, system: str, prompt: str, images: list, style: str) -> dict:
    """input_ids, attention_mask (and pixel_values, image_grid_thw, mm_token_type_ids with images)."""
    if not images:
        text = _render(parts, text_messages(system, prompt))
        return dict(parts.tokenizer([text], return_tensors="pt"))
    text = _render(parts, local_vision_messages(system, prompt, images, style))
    snapped = [qwen_vl_image(image) for image in images]
    processor = parts.image_processor
    vision = qwen_pixels(snapped, processor) if supported(processor) else \
        dict(processor(images=snapped, return_tensors="pt"))
    text = expand_image_tokens(text, vision["image_grid_thw"], parts.image_processor.merge_size, _image_token(parts))
    inputs = {**parts.tokenizer([text], return_tensors="pt", padding=True), **vision}
    if "mm_token_type_ids" in inspect.signature(parts.model.forward).parameters:
        image_id = parts.tokenizer.convert_tokens_to_ids(_image_token(parts))
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == image_id).long()
    return inputs


def expand_image_tokens(text: str, grids: torch.Tensor, merge_size: int, token: str) -> str:
    """Each image placeholder, in order, repeated (t * h * w) / merge_size^2 times for its image's patch grid."""
    parts = text.split(token)
    if len(parts) - 1 != len(grids):
        raise ValueError(f"the chat text has {len(parts) - 1} image placeholders for {len(grids)} images")
    counts = [int(grid.prod()) // merge_size**2 for grid in grids]
    return parts[0] + "".join(token * n + rest for n, rest in zip(counts, parts[1:]))


def folder_chat_template(folder: str) -> str | None:
    """The processor chat template saved in a Qwen2.5-VL folder (chat_template.jinja or chat_template.json)."""
    jinja, js = Path(folder) / "chat_template.jinja", Path(folder) / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    if js.is_file():
        found = json_value(js.read_bytes(), f"'{js}'")
        return found.get("chat_template") if isinstance(found, dict) else None
    return None


def _render(parts: QwenParts, messages: list[dict]) -> str:
    options = {"chat_template": parts.chat_template} if parts.chat_template else {}
    return parts.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **options)


def _image_token(parts: QwenParts) -> str:
    return getattr(parts.tokenizer, "image_token", None) or IMAGE_TOKEN
