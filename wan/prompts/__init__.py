"""Prompt extension as the official Wan scripts do it: a short prompt rewritten into the long, detailed kind the
models were trained on, by the Dashscope service or a local Qwen2.5 / Qwen2.5-VL model, with the official system
prompts (``data/system_prompts.json``, Apache-2.0, from the Wan 2.1 / 2.2 repositories).

Exports are imported lazily, so that the command line starts without loading torch.

May import: ``wan.memory`` (devices), ``wan.errors``; never the models or sampling.
"""
from importlib import import_module

_EXPORTS = {
    "extend_prompt": ".extend", "ExtendedPrompt": ".extend", "LocalOptions": ".extend",
    "DashscopeOptions": ".service", "INTERNATIONAL_URL": ".service",
    "METHODS": ".local_models", "DEFAULT_MODELS": ".local_models", "OFFICIAL_LOCAL_MODELS": ".local_models",
    "default_model": ".local_models", "DECODING": ".local_qwen", "LANGUAGES": ".system_prompts",
    "STYLES": ".system_prompts", "system_prompt": ".system_prompts", "pil_from_tensor": ".images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
