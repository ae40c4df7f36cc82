"""Context windows for long videos: the settings, the windows of each step and their blend weights (pure functions).

A video longer than the model was trained on (81 frames; 121 for TI2V-5B) is denoised in overlapping windows of
``context_frames``: at every step the model runs on each window and the guided velocities are blended per latent
frame as sum(w * v) / sum(w). Sizes are given in pixel frames and converted to latent frames like ComfyUI core:
``(context_frames - 1) // 4 + 1`` for the window, ``ceil(context_overlap / 4)`` for the overlap.

Schedules (latent frames ``T``, window ``L``, overlap ``O``, stride ``s = L - O``):

- ``static``: the fewest windows whose overlaps are at least O, spread evenly from the first frame to the last.
  The same every step.
- ``uniform_standard``: windows every s frames, moved by a step-dependent offset (the ordered-halving sequence
  0, s/2, s/4, 3s/4, ...), so the seams fall elsewhere at every step; a window always starts at 0 and one always
  ends on the last frame.
- ``uniform_looped``: ``ceil(T / s)`` windows at the step's offset on a circle: windows past the end wrap to the
  start, so the last frames are denoised together with the first ones and the video loops. Every frame is covered
  at every step (the wrapped windows make up what a plain row of windows would leave out).

Fuse (blend weights): ``linear`` ramps (j + 1) / (O + 1) over the first and last O frames of a window, only on
edges that meet another window (never at the start or end of a non-looped video); ``pyramid`` weights
min(j + 1, L - j) over the whole window. Weights are normalised per frame, so a frame that only one window covers
gets weight exactly 1 and the blend returns that window's velocity bit for bit.

FreeNoise: the noise of frame ``f >= L`` is the noise of frame ``f - L`` shuffled within each stride-long chunk,
so windows start from related noise and agree over their overlaps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..checks import whole_number
from ..errors import InputError

SCHEDULES = ("static", "uniform_standard", "uniform_looped")
FUSES = ("linear", "pyramid")
IMAGE_MODES = ("first", "all")
MAX_WINDOW_PROMPTS = 64  # prompts spread over one video (each covers a section of at least one window)
FREENOISE_SEED = 0  # fixed shuffle order; the noise itself comes from the sampler's seed


@dataclass
class ContextWindows:
    """``WAN_CONTEXT``: how a long video is split into windows while sampling.

    ``image_cond`` says which windows get the start image of I2V / TI2V conditioning: "first" (only the window that
    holds frame 0, as the image belongs there) or "all" (every window is conditioned as if it were a clip starting
    from the start image; keeps the subject but pulls each window back towards the image).
    ``prompts``: optional positive embeddings [P, tokens, text_dim] spread over the video in order (window k uses
    the prompt of the section its centre falls in); the negative prompt stays the sampler's.
    """

    context_frames: int = 81
    context_overlap: int = 16
    schedule: str = "static"
    fuse: str = "linear"
    freenoise: bool = True
    image_cond: str = "first"
    prompts: torch.Tensor | None = None
    prompt_texts: list[str] = field(default_factory=list)

    def __post_init__(self):
        check_context(self)

    @property
    def size(self) -> int:
        """Window length in latent frames."""
        return (self.context_frames - 1) // 4 + 1

    @property
    def overlap(self) -> int:
        """Overlap in latent frames (at most size - 1: windows must advance)."""
        return min(math.ceil(self.context_overlap / 4), self.size - 1)

    def describe(self) -> str:
        prompts = f", {len(self.prompts)} window prompts" if self.prompts is not None else ""
        return (f"context windows of {self.context_frames} frames ({self.size} latent), overlap "
                f"{self.context_overlap} ({self.overlap} latent), {self.schedule}, {self.fuse} blend, FreeNoise "
                f"{'on' if self.freenoise else 'off'}, image conditioning to {self.image_cond} window(s){prompts}")


def check_window_prompt_count(count: int) -> None:
    if count > MAX_WINDOW_PROMPTS:
        raise InputError(f"window_prompts has {count} prompts; at most {MAX_WINDOW_PROMPTS} are taken (each covers "
                         f"a section of the video, at least one window): join or drop lines")


def check_context(c: ContextWindows) -> None:
    whole_number(c.context_frames, "context_frames", hint="e.g. 81, the length Wan was trained on")
    whole_number(c.context_overlap, "context_overlap", hint="16 to 32 frames is usual")
    if c.context_frames < 5 or (c.context_frames - 1) % 4:
        fix = max(5, round((c.context_frames - 1) / 4) * 4 + 1)
        raise InputError(f"context_frames {c.context_frames} must be of the form 4n+1 and at least 5 (e.g. 81, the "
                         f"length Wan was trained on); use {fix}")
    if not 0 <= c.context_overlap < c.context_frames:
        raise InputError(f"context_overlap {c.context_overlap} must be at least 0 and less than context_frames "
                         f"({c.context_frames}); 16 to 32 frames is usual")
    for name, value, allowed in (("schedule", c.schedule, SCHEDULES), ("fuse", c.fuse, FUSES),
                                 ("image_cond", c.image_cond, IMAGE_MODES)):
        if value not in allowed:
            raise InputError(f"context window {name} '{value}' is unknown; use one of {allowed}")
    if c.prompts is not None and (not torch.is_tensor(c.prompts) or c.prompts.dim() != 3 or len(c.prompts) < 1):
        raise InputError(f"window prompts must be embeddings [prompts, tokens, dim]; got "
                         f"{tuple(c.prompts.shape) if torch.is_tensor(c.prompts) else type(c.prompts).__name__}")
    if c.prompts is not None:
        check_window_prompt_count(len(c.prompts))


def ordered_halving(step: int) -> float:
    """0, 1/2, 1/4, 3/4, 1/8, ...: the bits of ``step`` reversed behind the binary point (van der Corput)."""
    value, scale = 0.0, 0.5
    while step:
        value += scale * (step & 1)
        step, scale = step >> 1, scale / 2
    return value


def context_windows(length: int, size: int, overlap: int, schedule: str, step: int = 0) -> list[list[int]]:
    """The windows (lists of latent frame indices) of a ``length``-frame video at schedule step ``step``."""
    if schedule not in SCHEDULES:
        raise InputError(f"context window schedule '{schedule}' is unknown; use one of {SCHEDULES}")
    if not 0 <= overlap < size:
        raise InputError(f"window overlap {overlap} must be at least 0 and smaller than the window ({size})")
    if length <= size:
        return [list(range(length))]
    stride = size - overlap
    offset = 0 if schedule == "static" else int(stride * ordered_halving(step))
    if schedule == "uniform_looped":
        count = math.ceil(length / stride)
        return [[(offset + k * stride + j) % length for j in range(size)] for k in range(count)]
    last = length - size
    if schedule == "static":  # as few windows as the stride allows, spread evenly
        count = math.ceil(last / stride) + 1
        starts = {round(k * last / (count - 1)) for k in range(count)}
    else:
        starts = {0, last} | {s for s in range(offset, last, stride) if s > 0}
    return [list(range(s, s + size)) for s in sorted(starts)]


def blend_weights(windows: list[list[int]], length: int, overlap: int, fuse: str) -> list[torch.Tensor]:
    """Per window, float32 weights [L] normalised per frame: over all windows they sum to 1 on every covered frame,
    and are exactly 1 where a single window covers a frame."""
    looped = any(b < a for w in windows for a, b in zip(w, w[1:]))
    raw = [_raw_weights(w, windows, length, overlap, fuse, looped) for w in windows]
    total = torch.zeros(length, dtype=torch.float64)
    for w, r in zip(windows, raw):
        total.index_add_(0, torch.tensor(w), r)
    missing = (total == 0).nonzero().flatten().tolist()
    if missing:
        raise AssertionError(f"context windows leave latent frames {missing} uncovered")
    return [(r / total[torch.tensor(w)]).float() for w, r in zip(windows, raw)]


def _raw_weights(window: list[int], windows: list[list[int]], length: int, overlap: int, fuse: str,
                 looped: bool) -> torch.Tensor:
    size = len(window)
    pos = torch.arange(size, dtype=torch.float64)
    if fuse == "pyramid":
        return torch.minimum(pos + 1, size - pos)
    if fuse != "linear":
        raise InputError(f"context window fuse '{fuse}' is unknown; use one of {FUSES}")
    weights = torch.ones(size, dtype=torch.float64)
    if overlap == 0:
        return weights
    others = {f for w in windows if w is not window for f in w}
    ramp = (torch.arange(overlap, dtype=torch.float64) + 1) / (overlap + 1)
    before, after = window[0] - 1, window[-1] + 1  # the frames just outside the window's edges
    if looped:
        before, after = before % length, after % length
    if before in others:  # an edge that meets another window: ramp in
        weights[:overlap] = torch.minimum(weights[:overlap], ramp)
    if after in others:
        weights[-overlap:] = torch.minimum(weights[-overlap:], ramp.flip(0))
    return weights


def freenoise(noise: torch.Tensor, size: int, overlap: int, seed: int = FREENOISE_SEED) -> torch.Tensor:
    """Noise [B, C, T, h, w] with frame f >= ``size`` taken from frame f - ``size``, shuffled per stride chunk."""
    length = noise.shape[2]
    if length <= size:
        return noise
    out = noise.clone()
    stride = size - overlap
    generator = torch.Generator().manual_seed(seed)
    for start in range(size, length, stride):
        n = min(stride, length - start)
        source = torch.arange(start - size, start - size + n)[torch.randperm(n, generator=generator)]
        out[:, :, start:start + n] = out[:, :, source]
    return out


def prompt_index(window: list[int], length: int, count: int) -> int:
    """Which of ``count`` prompts (spread over the video in order) a window uses: the section of its centre."""
    centre = (window[0] + (len(window) - 1) / 2) % length
    return min(count - 1, int(centre * count / length))
