"""LoRA nodes: a LoRA file on a ``WAN_MODEL`` (one expert, the other, or both), and a Wan 2.2 HIGH/LOW pair."""
from __future__ import annotations

from ..wan.errors import InputError
from ..wan.experts import ExpertSet
from ..wan.lora import EXPERTS, apply_lora, load_lora
from . import host
from .validation import number_problem, verdict

CATEGORY = "Wan Experts/loaders"
STRENGTH_TOOLTIP = ("How strongly the LoRA changes the model: 1 = as trained, 0 = off, negative values invert it. "
                    "Applying the same file again replaces its earlier strength.")


def _lora_list():
    return (host.list_models("loras"),)


def _strength(tooltip: str = STRENGTH_TOOLTIP):
    return ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01, "tooltip": tooltip})


class WanExpertsLoRA:
    DISPLAY_NAME = "Wan LoRA"
    DESCRIPTION = ("Applies a LoRA from models/loras to a Wan model, in any key scheme (ComfyUI, kohya / musubi-tuner, "
                   "diffusers / PEFT, DiffSynth, VideoX-Fun, LyCORIS LoKr / LoHa, lightx2v full differences). Chain "
                   "several; each keeps its own strength. fp8 weights stay fp8 (the LoRA is applied on the fly); "
                   "fp16 / bf16 weights of the changed layers are merged into a copy. The input model is unchanged.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA, for Wan Sampler or another Wan LoRA.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WAN_MODEL", {"tooltip": "A Wan model from Load Wan DiT / Load Wan 2.2 MoE or another Wan LoRA."}),
            "lora_name": _lora_list() + ({"tooltip": "LoRA file in models/loras (.safetensors)."},),
            "strength": _strength(),
            "expert": (list(EXPERTS), {"default": "both", "tooltip": (
                "Wan 2.2 A14B: apply to both experts, only the high-noise one or only the low-noise one (LoRAs "
                "published as a HIGH / LOW pair go to their own expert). A single model takes 'both'.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, strength=None):
        return verdict(number_problem(cls, strength=strength))

    def apply(self, model, lora_name, strength=1.0, expert="both"):
        return (apply_lora(model, host.model_path("loras", lora_name), strength, expert),)


class WanExpertsLoRAPair:
    DISPLAY_NAME = "Wan 2.2 LoRA Pair"
    DESCRIPTION = ("Applies a Wan 2.2 A14B LoRA published as a pair: the HIGH file to the high-noise expert, the LOW "
                   "file to the low-noise expert, each with its own strength (e.g. the lightx2v 4-step distill "
                   "LoRAs). Same rules as Wan LoRA.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("Both experts with their LoRA, for Wan Sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WAN_MODEL", {"tooltip": "A Wan 2.2 A14B pair from Load Wan 2.2 MoE (or a LoRA node after it)."}),
            "high_noise_lora": _lora_list() + ({"tooltip": "The HIGH (high-noise) file of the pair, in models/loras."},),
            "high_strength": _strength("Strength on the high-noise expert (1 = as trained, 0 = off)."),
            "low_noise_lora": _lora_list() + ({"tooltip": "The LOW (low-noise) file of the pair, in models/loras."},),
            "low_strength": _strength("Strength on the low-noise expert (1 = as trained, 0 = off)."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, high_strength=None, low_strength=None):
        return verdict(number_problem(cls, high_strength=high_strength, low_strength=low_strength))

    def apply(self, model, high_noise_lora, high_strength=1.0, low_noise_lora="", low_strength=1.0):
        if not (isinstance(model, ExpertSet) and model.is_moe):
            raise InputError("Wan 2.2 LoRA Pair needs the two experts of a Wan 2.2 A14B model (Load Wan 2.2 MoE); "
                             "for a single model use Wan LoRA")
        high_file = load_lora(host.model_path("loras", high_noise_lora))  # both files are read before either applies
        low_file = load_lora(host.model_path("loras", low_noise_lora))
        model = apply_lora(model, high_file, high_strength, "high")
        return (apply_lora(model, low_file, low_strength, "low"),)


NODES = {"WanExpertsLoRA": WanExpertsLoRA, "WanExpertsLoRAPair": WanExpertsLoRAPair}
