"""Causal 3D convolution over a video processed chunk by chunk.

All temporal padding of a causal conv lies in the past. When a video is fed in time chunks (as the official Wan
VAEs do: encode 1 frame then 4 at a time, decode one latent frame at a time), each conv prepends the last input
frames it saw in the previous chunk, so the chunked result equals a single causal pass over the whole sequence.
Those remembered frames live in a ``TimeStream``: one per pass (and per spatial tile), never inside the modules.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TimeStream:
    """Per-pass memory of the modules that look back in time, keyed by module."""

    def __init__(self):
        self._state: dict[nn.Module, torch.Tensor | None] = {}

    def get(self, module: nn.Module) -> torch.Tensor | None:
        return self._state.get(module)

    def seen(self, module: nn.Module) -> bool:
        return module in self._state

    def put(self, module: nn.Module, frames: torch.Tensor | None) -> None:
        self._state[module] = None if frames is None else frames.clone()


class CausalConv3d(nn.Conv3d):
    """A Conv3d whose ``2 * padding[0]`` time padding is all in the past, filled from the stream when it has history.

    ``padding`` is (time, height, width) like ``nn.Conv3d``; the spatial part stays symmetric zero padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.past_frames = 2 * self.padding[0]
        self.padding = (0, self.padding[1], self.padding[2])

    def forward(self, x: torch.Tensor, stream: TimeStream | None = None) -> torch.Tensor:
        if not self.past_frames:
            return self._conv(x, self.weight)
        past = stream.get(self) if stream is not None else None
        if stream is not None:
            stream.put(self, last_frames(past, x, self.past_frames))
        have = 0 if past is None else past.shape[2]
        missing = self.past_frames - have
        parts = [x] if past is None else [past, x]
        if missing > 0 and x.shape[2] == 1:
            # One output frame whose first taps meet only zero padding: skip those taps (same sum, less work).
            frames = x if past is None else torch.cat(parts, dim=2)
            return self._conv(frames, self.weight[:, :, missing:])
        if missing > 0:
            parts.insert(0, x.new_zeros(x.shape[0], x.shape[1], missing, *x.shape[3:]))
        return self._conv(torch.cat(parts, dim=2), self.weight)

    def _conv(self, frames: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The 3-D convolution; one time tap over one frame runs as the equal 2-D convolution, which PyTorch's CPU
        backend computes several times faster than a one-frame 3-D one."""
        if weight.shape[2] == 1 and frames.shape[2] == 1:
            out = F.conv2d(frames[:, :, 0], weight[:, :, 0].contiguous(), self.bias, self.stride[1:], self.padding[1:])
            return out.unsqueeze(2)
        return F.conv3d(frames, weight, self.bias, self.stride, self.padding)


def last_frames(past: torch.Tensor | None, x: torch.Tensor, n: int) -> torch.Tensor:
    """The last ``n`` frames of ``past`` followed by ``x`` (fewer when the sequence is shorter)."""
    if past is None or x.shape[2] >= n:
        return x[:, :, -n:]
    return torch.cat([past[:, :, -(n - x.shape[2]):], x], dim=2)
