"""Wan Experts engine: pure PyTorch, importable without ComfyUI.

Public API (imported lazily so that ``import wan`` stays cheap):
    load_dit, load_moe, WanDiT, WanDiTConfig, ExpertSet   -- diffusion transformer(s)
    load_vae, WanVAE, WanVAEConfig                        -- Wan 2.1 / 2.2 VAEs (encode, decode, tiling)
    load_text_encoder, load_clip_vision, encode_prompts   -- UMT5 text encoder, CLIP vision
    TeaCache, MagCache, StepCache, CacheReport            -- step caching for the sampler
    sample, SamplerSettings, make_noise, image_condition, latent_shape
                                                          -- the denoise loop (expert switching), noise, image conditioning
    load_lora, apply_lora                                 -- LoRA files of every scheme, per expert, any precision
    TextEmbeds, ImageCond, ClipEmbeds                     -- conditioning passed between those calls
    InputError, CheckpointError, WanError                 -- the errors raised for bad input and bad files
    NonFiniteError, BudgetError                           -- NaN / infinity found; a run too large for its device
    estimate_sampling, MAX_TOKENS                         -- the memory budget checked before each run
    Settings, run                                         -- the whole generation (what python -m wan.generate runs)
    extend_prompt, ExtendedPrompt                         -- official prompt extension (Dashscope, local Qwen)
    save_video, write_video                               -- mp4 / webm output
    write_official_folder, write_comfy_files              -- tiny random-weight models in real file layouts
"""
from importlib import import_module

_EXPORTS = {
    "load_dit": ".dit.loader",
    "WanDiT": ".dit.model",
    "WanDiTConfig": ".dit.config",
    "load_moe": ".experts",
    "ExpertSet": ".experts",
    "VARIANTS": ".variants",
    "load_vae": ".vae.loader",
    "WanVAE": ".vae.vae",
    "WanVAEConfig": ".vae.config",
    "load_text_encoder": ".encoders",
    "load_clip_vision": ".encoders",
    "TextEncoder": ".encoders",
    "ClipVision": ".encoders",
    "encode_prompts": ".encoders",
    "TeaCache": ".cache",
    "MagCache": ".cache",
    "StepCache": ".cache",
    "CacheReport": ".cache",
    "sample": ".sampling",
    "SamplerSettings": ".sampling",
    "make_noise": ".sampling",
    "image_condition": ".sampling",
    "latent_shape": ".sampling",
    "TextEmbeds": ".conditioning",
    "ImageCond": ".conditioning",
    "ClipEmbeds": ".conditioning",
    "InputError": ".errors",
    "CheckpointError": ".errors",
    "WanError": ".errors",
    "NonFiniteError": ".finite",
    "BudgetError": ".budget.check",
    "estimate_sampling": ".budget.estimates",
    "MAX_TOKENS": ".budget.check",
    "save_video": ".video",
    "write_video": ".video",
    "load_lora": ".lora",
    "apply_lora": ".lora",
    "Settings": ".runner.pipeline",
    "run": ".runner.tasks",
    "write_official_folder": ".runner.demo",
    "extend_prompt": ".prompts",
    "ExtendedPrompt": ".prompts",
    "write_comfy_files": ".runner.demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
