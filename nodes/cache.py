"""Nodes that make a step-cache policy (``WAN_STEP_CACHE``) for Wan Sampler: TeaCache and MagCache."""
from __future__ import annotations

from pathlib import Path

from ..wan.cache import MagCache, TeaCache
from ..wan.cache.tables import published_coefficients, published_curves
from ..wan.errors import InputError
from . import host

CATEGORY = "Wan Experts/sampling"
OUTPUT_TOOLTIP = ("The step-cache policy; connect it to Wan Sampler's step_cache input. One policy can serve any "
                  "number of runs (its state restarts with each run).")
FALLBACK_TOOLTIP = ("When the model has no published data of its own (e.g. TeaCache on Wan 2.2 A14B, TI2V-5B, "
                    "FLF2V) or the chosen set belongs to another model: off = stop with an error; on = use the "
                    "nearest published set anyway, with a warning (speed/quality then differ from the paper's).")
FILE_TOOLTIP = ("Optional: a JSON file made by `python -m wan.cache.calibrate` (absolute, or relative to the "
                "output folder). When set it replaces the choice above.")


def _data_file(name: str) -> str | None:
    name = (name or "").strip()
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute():
        path = host.output_dir() / path
    if not path.is_file():
        raise InputError(f"step-cache data file '{name}' was not found (looked at '{path}'); make one with "
                         f"`python -m wan.cache.calibrate --out <file>` or clear the field")
    return str(path)


class _StepCacheNode:
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_STEP_CACHE",)
    RETURN_NAMES = ("step_cache",)
    OUTPUT_TOOLTIPS = (OUTPUT_TOOLTIP,)
    FUNCTION = "make"


class WanExpertsTeaCache(_StepCacheNode):
    DISPLAY_NAME = "Wan TeaCache"
    DESCRIPTION = ("TeaCache step caching: skips the transformer blocks on steps where the timestep embedding "
                   "predicts little change and reuses the last computed residual (per CFG branch; restarts at the "
                   "Wan 2.2 expert switch). Published coefficients exist for Wan 2.1 T2V 1.3B/14B and I2V 14B "
                   "480p/720p only.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "threshold": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "Skip while the accumulated rescaled change stays below this. Higher = faster, lower quality; "
                "0 = no skipping. Authors' values: 1.3B 0.08 (2x), 14B 0.2 (2x; e0 mode 0.3), I2V 480p 0.26, "
                "I2V 720p 0.3.")}),
            "mode": (["e", "e0"], {"default": "e", "tooltip": (
                "Signal: 'e' = time embedding (first and last step always computed); 'e0' = its projection, the "
                "authors' 'ret_steps' mode (first 5 steps always computed, usually better quality).")}),
            "start_step": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip": (
                "Steps before this one are always computed. -1 = the mode's default (1 for e, 5 for e0).")}),
            "end_step": ("INT", {"default": -1, "min": -1, "max": 1000, "tooltip": (
                "Steps from this one on are always computed. -1 = the mode's default (the last step for e, none "
                "for e0).")}),
            "coefficients": (["auto"] + sorted(published_coefficients()), {"default": "auto", "tooltip": (
                "Rescale polynomial: 'auto' picks the model's published set (480p or 720p by output size).")}),
            "allow_fallback": ("BOOLEAN", {"default": False, "tooltip": FALLBACK_TOOLTIP}),
        }, "optional": {
            "coefficients_file": ("STRING", {"default": "", "tooltip": FILE_TOOLTIP}),
        }}

    def make(self, threshold, mode="e", start_step=-1, end_step=-1, coefficients="auto", allow_fallback=False,
             coefficients_file=""):
        path = _data_file(coefficients_file)
        return (TeaCache(threshold, mode, None if start_step < 0 else start_step, None if end_step < 0 else end_step,
                         path or coefficients, allow_fallback),)


class WanExpertsMagCache(_StepCacheNode):
    DISPLAY_NAME = "Wan MagCache"
    DESCRIPTION = ("MagCache step caching: skips the transformer blocks while the calibrated magnitude ratios "
                   "predict a small accumulated error, at most K steps in a row, after the first retained steps "
                   "(per CFG branch; Wan 2.2 rules around the expert switch). Published curves exist for Wan 2.1 "
                   "T2V/I2V/VACE, Wan 2.2 A14B (T2V, I2V) and TI2V-5B.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "threshold": ("FLOAT", {"default": 0.12, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "Largest accumulated error allowed while reusing. Higher = faster, lower quality; 0 = no "
                "skipping. Authors' values: Wan 2.1 0.12, Wan 2.2 0.04-0.06.")}),
            "K": ("INT", {"default": 2, "min": 0, "max": 20, "tooltip": (
                "Most steps in a row that may reuse the cache (authors: 2).")}),
            "retention_ratio": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip": (
                "Fraction of first steps always computed (authors: 0.2; Wan 2.2 T2V 0.4, I2V 0.1). With two "
                "experts it applies to each expert's steps; the I2V high-noise expert always computes.")}),
            "curve": (["auto"] + sorted(published_curves()), {"default": "auto", "tooltip": (
                "Magnitude-ratio curve: 'auto' picks the model's published curve (I2V 480p/720p by output size, "
                "TI2V-5B by whether a start image is used). A curve of another model is an error.")}),
            "allow_fallback": ("BOOLEAN", {"default": False, "tooltip": FALLBACK_TOOLTIP}),
        }, "optional": {
            "curve_file": ("STRING", {"default": "", "tooltip": FILE_TOOLTIP}),
        }}

    def make(self, threshold, K=2, retention_ratio=0.2, curve="auto", allow_fallback=False, curve_file=""):
        path = _data_file(curve_file)
        return (MagCache(threshold, K, retention_ratio, path or curve, allow_fallback),)


NODES = {"WanExpertsTeaCache": WanExpertsTeaCache, "WanExpertsMagCache": WanExpertsMagCache}
