"""The Wan 2.1 / 2.2 video VAE as one module with the official parameter names.

``encode_chunks`` and ``decode_chunks`` run the official time chunking: the encoder sees the first frame, then 4
frames at a time (one latent frame per chunk); the decoder sees one latent frame at a time (1 frame out, then 4).
Causal convs carry their history between chunks through a ``TimeStream``, so the result is independent of how
long the video is, and memory is bounded by one chunk.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .blocks import AttentionBlock, Resample, ResidualBlock, RMSNorm
from .causal import CausalConv3d, TimeStream
from .config import WanVAEConfig
from .residual import DownBlock, UpBlock

ChunkCallback = Callable[[], None]


def _middle(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1))


def _run(x: torch.Tensor, conv1: CausalConv3d, stages, middle, head, stream: TimeStream) -> torch.Tensor:
    x = conv1(x, stream)
    for layer in (*stages, *middle):
        x = layer(x, stream)
    gathered = head[2].gather(x, stream, head[0].with_silu)
    del x
    return head[2].convolve(gathered)


class Encoder(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(3 * cfg.patch ** 2, dims[0], 3, padding=1)
        stages: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_down[i]
            if cfg.version == "2.2":
                stages.append(DownBlock(in_dim, out_dim, cfg.num_res_blocks, temporal, down=i != last))
                continue
            stages += [ResidualBlock(in_dim if j == 0 else out_dim, out_dim) for j in range(cfg.num_res_blocks)]
            if i != last:
                stages.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*stages)
        self.middle = _middle(dims[-1])
        self.head = _head(dims[-1], cfg.z_dim * 2)

    def forward(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        return _run(x, self.conv1, self.downsamples, self.middle, self.head, stream)


class Decoder(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.dec_dim * m for m in (cfg.dim_mult[-1], *reversed(cfg.dim_mult))]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        stages: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_up[i]
            if cfg.version == "2.2":
                stages.append(UpBlock(in_dim, out_dim, cfg.num_res_blocks + 1, temporal, up=i != last))
                continue
            in_dim = in_dim // 2 if i > 0 else in_dim  # the 2.1 upsample conv halves the width
            stages += [ResidualBlock(in_dim if j == 0 else out_dim, out_dim) for j in range(cfg.num_res_blocks + 1)]
            if i != last:
                stages.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", upsample_dim=out_dim // 2))
        self.upsamples = nn.Sequential(*stages)
        self.head = _head(dims[-1], 3 * cfg.patch ** 2)

    def forward(self, x: torch.Tensor, stream: TimeStream) -> torch.Tensor:
        return _run(x, self.conv1, self.middle, self.upsamples, self.head, stream)


class WanVAEModel(nn.Module):
    """Encoder, decoder and the two 1x1x1 convs around the latent (``conv1``: to mean/log-var, ``conv2``: back)."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder(cfg)

    def encode_chunks(self, video: torch.Tensor, on_chunk: ChunkCallback | None = None) -> torch.Tensor:
        """Video [B, 3, 1 + 4n, H, W] in the model dtype -> latent means [B, z, 1 + n, H/s, W/s]."""
        x = _patchify(video, self.config.patch)
        step = self.config.stride[0]
        stream = TimeStream(self.layout_for(x))
        outs = []
        for start in _chunk_starts(x.shape[2], step):
            outs.append(self.encoder(x[:, :, start:start + (1 if start == 0 else step)], stream))
            if on_chunk is not None:
                on_chunk()
        z = self.config.z_dim
        return F.conv3d(torch.cat(outs, dim=2), self.conv1.weight[:z], self.conv1.bias[:z])

    def decode_chunks(self, latents: torch.Tensor, on_chunk: ChunkCallback | None = None,
                      out_device: torch.device | None = None) -> torch.Tensor:
        """Latents [B, z, T, h, w] in the model dtype -> video [B, 3, 1 + 4(T-1), h*s, w*s] (not clamped).

        ``out_device``: where the video is assembled (e.g. the CPU, so a long video never sits on the GPU)."""
        stream = TimeStream(self.layout_for(latents))
        x = self.conv2(latents)
        out, filled = None, 0
        for t in range(x.shape[2]):
            frames = self.decoder(x[:, :, t:t + 1], stream)
            if out is None:  # written in place: no second copy of the whole video at the end
                total = 1 + self.config.stride[0] * (x.shape[2] - 1)
                out = frames.new_empty(*frames.shape[:2], total, *frames.shape[3:],
                                       device=out_device or frames.device)
            out[:, :, filled:filled + frames.shape[2]] = frames
            filled += frames.shape[2]
            del frames
            if on_chunk is not None:
                on_chunk()
        return _unpatchify(out, self.config.patch)


    def layout_for(self, x: torch.Tensor) -> torch.memory_format:
        """The memory layout of a pass over ``x``, with every conv weight put in it first (see ``use_layout``).

        Channels-last on the CPU: oneDNN convolves it without reordering every input and output, and a weight
        in the same layout is not reordered on every call either (a copy of each weight per chunk otherwise:
        12% of a Wan 2.2 decode). Weights keep their layout when moved, so a model going to the GPU is put back
        to the contiguous layout on its first pass there."""
        fmt = torch.channels_last_3d if x.device.type == "cpu" else torch.contiguous_format
        self.use_layout(fmt)
        return fmt

    def use_layout(self, fmt: torch.memory_format) -> None:
        """Every conv weight in layout ``fmt``, one weight at a time (values unchanged; a weight already in it is
        left alone, so this costs nothing after the first time). A VAE loaded for the CPU has its weights in the
        CPU layout from the start (``wan.vae.loader``); this converts only after a device changed the layout."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d) and not module.weight.is_contiguous(memory_format=fmt):
                module.weight.data = module.weight.data.contiguous(memory_format=fmt)


def _chunk_starts(frames: int, step: int) -> list[int]:
    """First frame alone, then ``step`` frames per chunk (frames past the last full chunk are not read)."""
    return [0] + list(range(1, frames - step + 1, step))


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    return rearrange(x, "b c f (h q) (w r) -> b (c r q) f h w", q=p, r=p)


def _unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 1:
        return x
    return rearrange(x, "b (c r q) f h w -> b c f (h q) (w r)", q=p, r=p)


def num_chunks(frames: int, step: int = 4) -> int:
    """How many encoder chunks a video of ``frames`` frames takes."""
    return len(_chunk_starts(frames, step))
