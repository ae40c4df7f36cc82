"""Causal 3D convolution over a video processed chunk by chunk.

All temporal padding of a causal conv lies in the past. When a video is fed in time chunks (as the official Wan
VAEs do: encode 1 frame then 4 at a time, decode one latent frame at a time), each conv prepends the last input
frames it saw in the previous chunk, so the chunked result equals a single causal pass over the whole sequence.
Those remembered frames live in a ``TimeStream``: one per pass (and per spatial tile), never inside the modules.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


class TimeStream:
    """Per-pass memory of the modules that look back in time, keyed by module."""

    def __init__(self, memory_format: torch.memory_format = torch.contiguous_format):
        self._state: dict[nn.Module, torch.Tensor | None] = {}
        self.memory_format = memory_format  # of the tensors the causal convs gather their inputs into

    def get(self, module: nn.Module) -> torch.Tensor | None:
        return self._state.get(module)

    def seen(self, module: nn.Module) -> bool:
        return module in self._state

    def put(self, module: nn.Module, frames: torch.Tensor | None) -> None:
        self._state[module] = None if frames is None else frames.clone()


SLOW_CONV3D_LIMIT = 20480  # see slow_conv3d
Prepare = Callable[..., torch.Tensor]  # prepare(x, out=view) -> out: elementwise work writing straight into the input


class CausalConv3d(nn.Conv3d):
    """A Conv3d whose ``2 * padding[0]`` time padding is all in the past, filled from the stream when it has history.

    ``padding`` is (time, height, width) like ``nn.Conv3d``; the spatial part stays symmetric zero padding.
    ``forward(x, stream, prepare)`` = ``convolve(gather(x, stream, prepare))``; callers that hold on to ``x`` may
    call the two halves themselves and drop ``x`` in between.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.past_frames = 2 * self.padding[0]
        self.padding = (0, self.padding[1], self.padding[2])

    def forward(self, x: torch.Tensor, stream: TimeStream | None = None,
                prepare: Prepare | None = None) -> torch.Tensor:
        return self.convolve(self.gather(x, stream, prepare))

    def gather(self, x: torch.Tensor, stream: TimeStream | None = None,
               prepare: Prepare | None = None) -> tuple[torch.Tensor, int]:
        """The convolution's input in one new tensor, [zero padding | remembered frames | prepare(x)], and how
        many leading taps to skip; the stream keeps the last frames of it for the next chunk."""
        past = stream.get(self) if stream is not None and self.past_frames else None
        have = 0 if past is None else past.shape[2]
        missing = max(0, self.past_frames - have)
        # One output frame whose first taps meet only zero padding: skip those taps (same sum, less work).
        skip = missing if x.shape[2] == 1 else 0
        fmt = stream.memory_format if stream is not None else torch.contiguous_format
        frames = _joined(x, past, missing - skip, prepare, fmt)
        if stream is not None and self.past_frames:
            stream.put(self, frames[:, :, max(missing - skip, frames.shape[2] - self.past_frames):])
        return frames, skip

    def convolve(self, gathered: tuple[torch.Tensor, int]) -> torch.Tensor:
        """The 3-D convolution. One output frame computed from exactly as many frames as the kernel has (live)
        taps runs as the equal 2-D convolution over those frames stacked as channels: always for one frame (the
        first chunk), else where PyTorch's CPU backend would take its slow 3-D path (see ``slow_conv3d``)."""
        frames, skip = gathered
        weight = self.weight[:, :, skip:] if skip else self.weight
        taps = weight.shape[2]
        if frames.shape[2] == taps and (taps == 1 or slow_conv3d(frames)):
            n, c, _, h, w = frames.shape
            out = F.conv2d(frames.reshape(n, c * taps, h, w), weight.reshape(weight.shape[0], -1, *weight.shape[3:]),
                           self.bias, self.stride[1:], self.padding[1:])
            return out.unsqueeze(2)
        return F.conv3d(frames, weight, self.bias, self.stride, self.padding)


def slow_conv3d(x: torch.Tensor) -> bool:
    """Whether PyTorch's CPU backend runs a 3-D convolution of ``x`` through its slow unfold path rather than
    oneDNN: for a float32 batch of one it takes oneDNN only when N·C·D·H > 20480 (``use_mkldnn`` in
    aten/src/ATen/native/Convolution.cpp), e.g. not for 384 channels x 3 frames x 16 rows (a 128-pixel Wan 2.1
    latent), where the stacked 2-D convolution is twice as fast; above it the two are within a few percent."""
    n, c, d, h = x.shape[:4]
    return x.device.type == "cpu" and x.dtype == torch.float32 and n == 1 and n * c * d * h <= SLOW_CONV3D_LIMIT


def _joined(x: torch.Tensor, past: torch.Tensor | None, zeros: int, prepare: Prepare | None,
            memory_format: torch.memory_format) -> torch.Tensor:
    """[``zeros`` zero frames | past | prepare(x)] along time, written once into a new tensor in ``memory_format``
    (x itself when there is nothing to join, nothing to prepare and x has that layout already)."""
    if past is None and not zeros and prepare is None:
        return x.contiguous(memory_format=memory_format)
    have = 0 if past is None else past.shape[2]
    out = torch.empty(x.shape[0], x.shape[1], zeros + have + x.shape[2], *x.shape[3:], dtype=x.dtype,
                      device=x.device, memory_format=memory_format)
    out[:, :, :zeros].zero_()
    if past is not None:
        out[:, :, zeros:zeros + have] = past
    if prepare is None:
        out[:, :, zeros + have:] = x
    else:
        prepare(x, out=out[:, :, zeros + have:])
    return out
