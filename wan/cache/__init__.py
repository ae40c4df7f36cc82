"""Step caching: reuse the blocks' residual on steps where the output is predicted to change little.

    TeaCache(threshold, mode="e"|"e0", start_step, end_step, coefficients="auto", allow_fallback=False)
    MagCache(threshold=0.12, K=2, retention_ratio=0.2, curve="auto", allow_fallback=False)
    StepCache, CacheReport                      -- the protocol the denoise loop uses (begin / forward / end)
    calibrate(experts, run), write_calibration -- coefficients / curves for models without published ones
                                                  (wan.cache.calibration; CLI: python -m wan.cache.calibrate)

May import: the models it watches (``wan.dit``, ``wan.experts``), ``wan.sampling``'s small helpers, ``wan.weights``, ``wan.conditioning``, ``wan.variants``, ``wan.checks``, ``wan.errors``. The denoise loop imports it.
"""
from .base import BATCHED, BRANCHES, CacheReport, StepCache
from .magcache import MagCache
from .teacache import TeaCache

__all__ = ["BATCHED", "BRANCHES", "CacheReport", "MagCache", "StepCache", "TeaCache"]
