"""Nodes that make a step-cache policy (``WAN_STEP_CACHE``) for Wan Sampler: TeaCache and MagCache."""
from __future__ import annotations

from ..wan.cache import MagCache, TeaCache
from ..wan.cache.tables import DATA_LIMIT, base_variant, published_coefficients, published_curves
from ..wan.errors import InputError
from . import host
from .files import confined_file, list_files
from .validation import file_problem, number_problem, verdict

CATEGORY = "Wan Experts/sampling"
OUTPUT_TOOLTIP = ("The step-cache policy; connect it to Wan Sampler's step_cache input. One policy can serve any "
                  "number of runs (its state restarts with each run).")
FALLBACK_TOOLTIP = ("When the model has no published data of its own (e.g. TeaCache on Wan 2.2 A14B, TI2V-5B, "
                    "FLF2V) or the chosen set belongs to another model: off = stop with an error; on = use the "
                    "nearest published set anyway, with a warning (speed/quality then differ from the paper's).")
FILE_TOOLTIP = ("Optional: a JSON file made by `python -m wan.cache.calibrate`, put in models/wan_step_cache. When "
                "set it replaces the choice above.")
NO_FILE = "none"


def _data_files() -> list[str]:
    return [NO_FILE] + list_files(host.STEP_CACHE_KIND, (".json",), DATA_LIMIT)


def _data_choice(name: str, choice: str, published: dict, file: str) -> str:
    """The set to use: a confined calibration file when one is chosen, else a published name (or 'auto')."""
    if file not in (None, "", NO_FILE):
        return str(confined_file(host.STEP_CACHE_KIND, file, "step-cache data file", DATA_LIMIT))
    if choice != "auto" and choice not in published and choice not in {base_variant(k) for k in published}:
        raise InputError(f"{name} '{str(choice)[:80]}' is unknown; choose 'auto' or one of {sorted(published)}, or "
                         f"pick a calibrated file")
    return choice


def _file_problem(name) -> str | None:
    return file_problem(host.STEP_CACHE_KIND, name, "step-cache data file", DATA_LIMIT)


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
            "coefficients_file": (_data_files(), {"default": NO_FILE, "tooltip": FILE_TOOLTIP}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, threshold=None, coefficients_file=None):
        return verdict(number_problem(cls, threshold=threshold), _file_problem(coefficients_file))

    def make(self, threshold, mode="e", start_step=-1, end_step=-1, coefficients="auto", allow_fallback=False,
             coefficients_file=NO_FILE):
        data = _data_choice("coefficients", coefficients, published_coefficients(), coefficients_file)
        start, end = (None if v is not None and v < 0 else v for v in (start_step, end_step))
        return (TeaCache(threshold, mode, start, end, data, allow_fallback),)


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
            "curve_file": (_data_files(), {"default": NO_FILE, "tooltip": FILE_TOOLTIP}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, threshold=None, retention_ratio=None, curve_file=None):
        return verdict(number_problem(cls, threshold=threshold, retention_ratio=retention_ratio),
                       _file_problem(curve_file))

    def make(self, threshold, K=2, retention_ratio=0.2, curve="auto", allow_fallback=False, curve_file=NO_FILE):
        data = _data_choice("curve", curve, published_curves(), curve_file)
        return (MagCache(threshold, K, retention_ratio, data, allow_fallback),)


NODES = {"WanExpertsTeaCache": WanExpertsTeaCache, "WanExpertsMagCache": WanExpertsMagCache}
