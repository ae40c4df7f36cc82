"""The face motion encoder of the Animate DiT (official ``motion_encoder.*``, a LIA appearance encoder).

A square face crop (512 x 512 for Wan 2.2 Animate-14B) goes through a 1x1 conv and residual blocks that halve it
down to 4 x 4 (3x3 convs with a fixed [1, 3, 3, 1] blur before each stride-2 conv, leaky ReLU x sqrt 2), a 4x4 conv
to a style vector, linear layers to ``motion_dim`` (20) coefficients, and those weigh an orthonormal basis (the QR of
``dec.direction.weight``, in float32) of the motion space (512 wide). Convolutions and linears use the "equalised"
scale 1 / sqrt(fan_in) of the official code. The widths come from the weights, so the face size is read off them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..weights.ops import Linear, widened

BLUR = (1.0, 3.0, 3.0, 1.0)
LEAK, GAIN = 0.2, math.sqrt(2.0)


class Blur(nn.Module):
    """The official ``upfirdn2d`` FIR blur with up = down = 1: zero padding, then the normalised 4x4 kernel per
    channel (computed, not stored: the official ``kernel`` buffers in files are ignored at load)."""

    def __init__(self, pad: tuple[int, int]):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.tensor(BLUR, dtype=torch.float32, device=x.device)
        k = (k[None, :] * k[:, None]) / (k.sum() ** 2)
        c, (p0, p1) = x.shape[1], self.pad
        return widened(F.conv2d, F.pad(x, (p0, p1, p0, p1)), k.to(x.dtype).expand(c, 1, 4, 4), groups=c)


class EqualConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))  # official init
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale, self.stride, self.padding = 1 / math.sqrt(c_in * kernel * kernel), stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.scale
        b = None if self.bias is None else self.bias.to(x.dtype)
        return widened(F.conv2d, x, w, b, stride=self.stride, padding=self.padding)


class BiasLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) * sqrt 2 (official ``FusedLeakyReLU``; bias stored as [1, C, 1, 1])."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype), LEAK) * GAIN


def conv_layer(c_in: int, c_out: int, kernel: int, downsample: bool = False, activate: bool = True) -> nn.Sequential:
    """Official ``ConvLayer`` (its parameter names: [blur,] conv[, activation])."""
    layers: list[nn.Module] = []
    if downsample:
        p = (len(BLUR) - 2) + (kernel - 1)
        layers += [Blur(((p + 1) // 2, p // 2)), EqualConv2d(c_in, c_out, kernel, stride=2)]
    else:
        layers.append(EqualConv2d(c_in, c_out, kernel, padding=kernel // 2))
    if activate:
        layers.append(BiasLeakyReLU(c_out))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = conv_layer(c_in, c_in, 3)
        self.conv2 = conv_layer(c_in, c_out, 3, downsample=True)
        self.skip = conv_layer(c_in, c_out, 1, downsample=True, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / GAIN


class EqualLinear(Linear):
    """Linear with the equalised scale, applied to the input (x s) W^T + b = x (s W)^T + b, so that the weight
    goes through the shared Linear (stored formats, LoRA)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * (1 / math.sqrt(self.in_features)))


class AppearanceNet(nn.Module):
    def __init__(self, widths: tuple[int, ...], style_dim: int):
        super().__init__()
        convs: list[nn.Module] = [conv_layer(3, widths[0], 1)]
        convs += [ResBlock(a, b) for a, b in zip(widths[:-1], widths[1:])]
        convs.append(EqualConv2d(widths[-1], style_dim, 4))
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x.flatten(1)


class Encoder(nn.Module):
    def __init__(self, widths: tuple[int, ...], style_dim: int, motion_dim: int, linears: int):
        super().__init__()
        self.net_app = AppearanceNet(widths, style_dim)
        self.fc = nn.Sequential(*(EqualLinear(style_dim, style_dim) for _ in range(linears - 1)),
                                EqualLinear(style_dim, motion_dim))


class Direction(nn.Module):
    def __init__(self, out_dim: int, motion_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, motion_dim))


class Synthesis(nn.Module):
    def __init__(self, out_dim: int, motion_dim: int):
        super().__init__()
        self.direction = Direction(out_dim, motion_dim)


class MotionEncoder(nn.Module):
    """Face crops [N, 3, S, S] in [-1, 1] -> motion vectors [N, out_dim] (official ``Generator.get_motion``)."""

    def __init__(self, widths: tuple[int, ...], style_dim: int = 512, motion_dim: int = 20, out_dim: int = 512,
                 linears: int = 5):
        super().__init__()
        self.size = 2 ** (len(widths) + 1)
        self.enc = Encoder(widths, style_dim, motion_dim, linears)
        self.dec = Synthesis(out_dim, motion_dim)

    def forward(self, faces: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        coeffs = self.enc.fc(self.enc.net_app(faces.to(dtype)))
        q = torch.linalg.qr(self.dec.direction.weight.float() + 1e-8)[0]  # [out_dim, motion_dim]
        return (torch.diag_embed(coeffs.float()) @ q.T).sum(dim=1)  # float32, as official
