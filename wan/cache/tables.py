"""The published step-cache data (``data/*.json``, copied verbatim with their provenance) and how to pick from it.

Keys are our variant ids, with a suffix where one variant has several sets: ``_480p`` / ``_720p`` (2.1 I2V-14B,
chosen by the output area) and ``_t2v`` / ``_i2v`` (TI2V-5B, chosen by whether a start image is used).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..checks import finite_number, json_value, whole_number
from ..errors import InputError
from ..weights.files import MiB, read_regular_file

DATA = Path(__file__).parent / "data"
TEACACHE_FILE = DATA / "teacache_coefficients.json"
MAGCACHE_FILE = DATA / "magcache_curves.json"
SUFFIXES = ("_480p", "_720p", "_t2v", "_i2v")
AREA_720P = 1280 * 720
AREA_480P = 832 * 480
TEACACHE_MODES = ("e", "e0")
DATA_LIMIT = 4 * MiB  # calibration files are a few kB

# Variants without a published TeaCache set, and the published set nearest to each (used only when asked).
TEACACHE_NEAREST = {
    "wan22_t2v_a14b": "wan21_t2v_14b",  # the 2.2 experts are 14B T2V-shaped DiTs
    "wan22_i2v_a14b": "wan21_i2v_14b",
    "wan21_flf2v_14b": "wan21_i2v_14b",  # FLF2V is a fine-tune of the I2V-14B model
    "wan22_ti2v_5b": "wan21_t2v_1.3b",
    "wan21_vace_1.3b": "wan21_t2v_1.3b",  # VACE models: the T2V model plus VACE blocks
    "wan21_vace_14b": "wan21_t2v_14b",
    "wan22_vace_a14b": "wan21_t2v_14b",
}
MAGCACHE_NEAREST = {"wan21_flf2v_14b": "wan21_i2v_14b", "wan21_vace_1.3b": "wan21_t2v_1.3b",
                    "wan21_vace_14b": "wan21_t2v_14b", "wan22_vace_a14b": "wan22_t2v_a14b"}


def base_variant(key: str) -> str:
    """The variant id a data key belongs to ("wan21_i2v_14b_480p" -> "wan21_i2v_14b")."""
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


@dataclass(frozen=True)
class CoefficientSet:
    """A TeaCache rescale polynomial per signal mode (numpy.poly1d order, highest power first)."""

    name: str
    variant: str
    coefficients: dict[str, tuple[float, ...]]
    recommended: dict[str, float]
    source: str

    def for_mode(self, mode: str) -> tuple[float, ...]:
        if mode not in self.coefficients:
            raise InputError(f"TeaCache coefficients '{self.name}' have no '{mode}' polynomial (they have "
                             f"{sorted(self.coefficients)}); choose mode {sorted(self.coefficients)}")
        return self.coefficients[mode]


@dataclass(frozen=True)
class MagCurve:
    """MagCache magnitude ratios per step for the cond and the uncond branch (step 0 padded with 1.0)."""

    name: str
    variant: str
    cond: tuple[float, ...]
    uncond: tuple[float, ...]
    source: str
    switch_step: int | None = None  # two-expert curves: first low-noise step of the calibration run, if recorded

    @property
    def steps(self) -> int:
        return len(self.cond)


def _read(path: Path) -> dict:
    data = read_regular_file(path, DATA_LIMIT, "step-cache data file")
    table = json_value(data, f"step-cache data file '{path}'")
    if not isinstance(table, dict):
        raise InputError(f"step-cache data file '{path}' holds a JSON {type(table).__name__}, not a table; make "
                         f"one with python -m wan.cache.calibrate")
    return table


def parse_coefficients(data: dict, source: str) -> dict[str, CoefficientSet]:
    sets = data.get("coefficients")
    if not isinstance(sets, dict) or not sets:
        raise InputError(f"'{source}' has no 'coefficients' table; it is not a TeaCache coefficients file "
                         f"(make one with python -m wan.cache.calibrate)")
    recommended = data.get("recommended_thresholds", {})
    out = {}
    for key, modes in sets.items():
        modes = _entry(modes, source, f"coefficient set '{key}'")
        polys = {m: _numbers(modes[m], source, f"coefficient set '{key}' mode '{m}'") for m in TEACACHE_MODES
                 if m in modes}
        if not polys or any(len(p) < 2 for p in polys.values()):
            raise InputError(f"'{source}': coefficient set '{key}' has no usable 'e' or 'e0' polynomial")
        about = data.get("_about", "")
        out[key] = CoefficientSet(key, base_variant(key), polys, dict(recommended.get(key, {})),
                                  f"{source}: {about}" if about else source)
    return out


def parse_curves(data: dict, source: str) -> dict[str, MagCurve]:
    curves = data.get("curves")
    if not isinstance(curves, dict) or not curves:
        raise InputError(f"'{source}' has no 'curves' table; it is not a MagCache curves file")
    out = {}
    for key, entry in curves.items():
        entry = _entry(entry, source, f"curve '{key}'", ("ratios", "steps"))
        ratios = list(_numbers(entry["ratios"], source, f"curve '{key}' ratios"))
        steps = whole_number(entry["steps"], f"'{source}': curve '{key}' steps", 2)
        if len(ratios) != 2 * (steps - 1):
            raise InputError(f"'{source}': curve '{key}' has {len(ratios)} ratios; {steps} steps need "
                             f"{2 * (steps - 1)} (cond and uncond interleaved, from step 1)")
        padded = [1.0, 1.0] + ratios  # the published code pads step 0 so the list has one pair per step
        switch = entry.get("switch_step")
        switch = None if switch is None else whole_number(switch, f"'{source}': curve '{key}' switch_step", 0)
        out[key] = MagCurve(key, base_variant(key), tuple(padded[0::2]), tuple(padded[1::2]), source,
                            switch)
    return out


def _entry(value, source: str, what: str, required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict) or any(k not in value for k in required):
        keys = f" with {', '.join(required)}" if required else ""
        raise InputError(f"'{source}': {what} must be a table{keys}; make the file with python -m wan.cache.calibrate")
    return value


def _numbers(values, source: str, what: str) -> tuple[float, ...]:
    if not isinstance(values, list):
        raise InputError(f"'{source}': {what} must be a list of numbers; got {type(values).__name__}")
    return tuple(finite_number(v, f"'{source}': {what}") for v in values)


@lru_cache(maxsize=None)
def published_coefficients() -> dict[str, CoefficientSet]:
    return parse_coefficients(_read(TEACACHE_FILE), "TeaCache4Wan2.1 (ali-vilab/TeaCache)")


@lru_cache(maxsize=None)
def published_curves() -> dict[str, MagCurve]:
    return parse_curves(_read(MAGCACHE_FILE), "MagCache (Zehong-Ma/MagCache)")


def load_coefficients(path) -> dict[str, CoefficientSet]:
    return parse_coefficients(_read(Path(path)), str(path))


def load_curves(path) -> dict[str, MagCurve]:
    return parse_curves(_read(Path(path)), str(path))


def pick_key(table: dict, variant: str, area: int | None = None, with_image: bool | None = None) -> str | None:
    """The key of ``table`` for a variant; sub-sets chosen by output area (480p/720p) or start image (t2v/i2v)."""
    if variant in table:
        return variant
    candidates = [k for k in table if base_variant(k) == variant]
    if not candidates:
        return None
    if any(k.endswith(("_480p", "_720p")) for k in candidates):
        big = area is not None and area > (AREA_480P + AREA_720P) // 2
        wanted = variant + ("_720p" if big else "_480p")
    else:
        wanted = variant + ("_i2v" if with_image else "_t2v")
    return wanted if wanted in table else sorted(candidates)[0]


def nearest_interp(values: tuple[float, ...], length: int) -> np.ndarray:
    """Resample a curve to ``length`` points by nearest index (MagCache's rule for other step counts)."""
    src = np.asarray(values, dtype=np.float64)
    if length <= 0:
        return src[:0]
    if length == 1:
        return src[-1:]
    scale = (len(src) - 1) / (length - 1)
    return src[np.round(np.arange(length) * scale).astype(int)]
