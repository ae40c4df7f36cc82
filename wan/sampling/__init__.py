"""Sampling: schedules, flow solvers, image conditioning and the denoise loop with expert switching.

Also: context windows (``windows``, ``windowed``), extension of a video from its last frames (``extend``, ``color``),
the VACE context from a control video, masks and reference images (``vace``), the clip loops of speech to video
(``s2v``) and of character animation / replacement (``animate``).

May import: ``wan.experts``, ``wan.cache``, ``wan.budget``, ``wan.memory``, ``wan.conditioning``, ``wan.latents``,
``wan.finite``, ``wan.checks``, ``wan.variants``, ``wan.errors``; never the run or the nodes.
"""
from .imagecond import concat_condition, first_frame_condition, image_condition
from .loop import SampleResult, SamplerSettings, SolverState, StepInfo, expert_plan, sample
from .noise import make_noise
from .schedules import Schedule, make_schedule
from .shapes import latent_shape
from .solvers import SOLVERS, make_solver

__all__ = ["SOLVERS", "SampleResult", "SamplerSettings", "Schedule", "SolverState", "StepInfo", "concat_condition",
           "expert_plan", "first_frame_condition", "image_condition", "latent_shape", "make_noise", "make_schedule",
           "make_solver", "sample"]
