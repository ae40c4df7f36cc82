"""LoRA files of every Wan scheme -> one form -> patches on a model (merged, or on the fly for fp8 / quantised).

    lora = wan.load_lora("models/loras/my_lora.safetensors")        # any scheme: Comfy, kohya, diffusers, ...
    model = wan.apply_lora(experts, lora, strength=0.8, expert="high")

``keys`` reads the key schemes, ``file`` the files (``LoraFile``: targets by official parameter name), ``convert``
holds the scale rule and the shape checks (-> ``wan.weights.patching.PatchSet``), ``apply`` puts them on a model.

May import: ``wan.weights`` (patches and patched copies), the models it patches (``wan.dit``, ``wan.experts``),
``wan.errors``. It sits above the models, so it is a sibling of ``wan.weights``, not inside it.
"""
from .apply import EXPERTS, LoraChoice, apply_choices, apply_lora
from .convert import lora_scale, patch_set
from .file import LoraFile, LoraTarget, load_lora

__all__ = ["EXPERTS", "LoraChoice", "LoraFile", "LoraTarget", "apply_choices", "apply_lora", "load_lora",
           "lora_scale", "patch_set"]
