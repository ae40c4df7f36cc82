"""The chat messages the official prompt extender sends, one builder per path.

- Text only (Dashscope and local Qwen): a system turn and a user turn, both plain strings.
- Dashscope with images: content lists; the user turn is the prompt, then each image as a ``file://`` URL.
- Local Qwen2.5-VL: typed content lists. Wan 2.2 shows its one image before the prompt; Wan 2.1 (and any call
  with two images, which only Wan 2.1 has) puts the prompt first and the images after it.
"""
from __future__ import annotations


def text_messages(system: str, prompt: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def dashscope_vision_messages(system: str, prompt: str, image_urls: list[str]) -> list[dict]:
    return [
        {"role": "system", "content": [{"text": system}]},
        {"role": "user", "content": [{"text": prompt}, *({"image": url} for url in image_urls)]},
    ]


def local_vision_messages(system: str, prompt: str, images: list, style: str) -> list[dict]:
    if style.startswith("wan2.2") and len(images) == 1:  # wan2.2 and wan2.2-ti2v
        user = [{"type": "image", "image": images[0]}, {"type": "text", "text": prompt}]
    else:
        user = [{"type": "text", "text": prompt}, *({"image": image} for image in images)]
    return [{"role": "system", "content": [{"type": "text", "text": system}]}, {"role": "user", "content": user}]
