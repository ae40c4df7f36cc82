"""A prompt rewrite with a local Qwen2.5 (text) or Qwen2.5-VL (image) model through ``transformers``.

The model is loaded from its folder only (``local_files_only``), in the folder's own precision, runs on the given
device and is freed right after. Decoding: ``sample`` uses the folder's generation settings (Qwen's published
sampling, as the official extender) with torch's generator seeded by ``seed``; ``greedy`` always picks the most
likely token (after the folder's repetition penalty). Either way the same seed gives the same text.
"""
from __future__ import annotations

import gc

import torch

from ..memory.devices import module_device
from ..errors import InputError
from .local_models import LocalModel
from .qwen_inputs import QwenParts, chat_inputs, folder_chat_template

MAX_NEW_TOKENS = 512  # official
PROCESSOR_MIN_PIXELS, PROCESSOR_MAX_PIXELS = 256 * 28 * 28, 1280 * 28 * 28  # official Qwen2.5-VL pixel budget
DECODING = ("sample", "greedy")


def ask_local_qwen(model: LocalModel, system: str, prompt: str, images: list, seed: int, style: str,
                   decoding: str = "sample", device: torch.device | str | None = None,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """The model's rewrite of ``prompt`` (the model is loaded for this call and freed before returning)."""
    parts = load_qwen(model, device)
    try:
        inputs = chat_inputs(parts, system, prompt, images, style)
        new_tokens = generate(parts.model, inputs, seed, decoding == "greedy", max_new_tokens)
        # official: the VL path decodes without clean-up of tokenization spaces, the text path with the default
        clean = {"clean_up_tokenization_spaces": False} if images else {}
        return parts.tokenizer.decode(new_tokens, skip_special_tokens=True, **clean)
    finally:
        release(parts)


def load_qwen(model: LocalModel, device: torch.device | str | None = None) -> QwenParts:
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(model.path, local_files_only=True)
    image_processor = template = None
    cls = AutoModelForCausalLM
    if model.vision:
        cls = _vision_model_class(model.path)
        image_processor = AutoImageProcessor.from_pretrained(
            model.path, local_files_only=True, min_pixels=PROCESSOR_MIN_PIXELS, max_pixels=PROCESSOR_MAX_PIXELS)
        template = folder_chat_template(model.path)
    net = cls.from_pretrained(model.path, local_files_only=True, **_auto_dtype())
    return QwenParts(net.to(device).eval(), tokenizer, image_processor, template)


def generate(model: torch.nn.Module, inputs: dict, seed: int, greedy: bool, max_new_tokens: int) -> torch.Tensor:
    """The new token ids (prompt removed); the global random state is left as it was."""
    device = module_device(model)
    inputs = {name: value.to(device) for name, value in inputs.items()}
    options = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None} if greedy else {}
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, **options)
    return out[0, inputs["input_ids"].shape[1]:].cpu()


def release(parts: QwenParts) -> None:
    on_cuda = module_device(parts.model).type == "cuda"
    parts.model = None
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()


def _vision_model_class(folder: str):
    import transformers
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
    name = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}.get(
        model_type, "AutoModelForImageTextToText")
    cls = getattr(transformers, name, None)
    if cls is None:
        raise InputError(f"The prompt-extension model in '{folder}' ({model_type}) needs a newer transformers "
                         f"(Qwen2.5-VL: 4.49 or later): pip install -U transformers")
    return cls


def _auto_dtype() -> dict:
    """The folder's own precision; the keyword is ``dtype`` from transformers 4.56 on, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": "auto"} if (major, minor) >= (4, 56) else {"torch_dtype": "auto"}
