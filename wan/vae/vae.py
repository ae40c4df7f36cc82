"""``WanVAE``: encode videos to raw latents and decode them back, whole or in spatial tiles.

Videos are [B, 3, F, H, W] in [-1, 1]; latents are the raw posterior means [B, z, T, h, w] (the DiT works on
``normalize(latents)``). F must be 4n+1: other frame counts are trimmed to the largest 4n+1 (the official encoder
ignores those trailing frames too) and a warning is logged. H and W must be multiples of the spatial stride.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .. import latents as latent_stats
from ..budget.check import check_vae
from ..checks import whole_number
from ..errors import InputError
from ..finite import check_input, check_output
from ..latents import VAE_NAME
from ..weights.ops import generic_half
from .model import WanVAEModel, num_chunks
from .tiling import TileGrid, run_tiled

log = logging.getLogger("wan_experts")

ProgressCallback = Callable[[int, int], None]  # (chunks done, chunks in total)
TILED_MODES = ("auto", "on", "off")
DEFAULT_TILE_SIZE = 512  # pixels
DEFAULT_OVERLAP = 64  # pixels
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class WanVAE:
    def __init__(self, model: WanVAEModel, dtype: torch.dtype, device: torch.device | str = "cpu", source: str = ""):
        self.model = model
        self.dtype = dtype
        self.device = torch.device(device)
        self.source = source

    # --- description ---------------------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def version(self) -> str:
        return self.config.version

    @property
    def z_dim(self) -> int:
        return self.config.z_dim

    @property
    def stride(self) -> tuple[int, int, int]:
        return self.config.stride

    def __repr__(self) -> str:
        return f"WanVAE({self.version}, z {self.z_dim}, {str(self.dtype).replace('torch.', '')}, {self.device})"

    def to(self, device: torch.device | str) -> "WanVAE":
        device = torch.device(device)
        if device.type != "cpu" and self._weight_dtype() != self.dtype:  # widened for CPU passes: back first
            self.model.to(dtype=self.dtype)
        self.model.to(device)
        self.device = device
        return self

    @property
    def pass_dtype(self) -> torch.dtype:
        """The dtype the passes compute in: the VAE's, except half precision on a CPU without native half-precision
        products (there its convolutions take a generic kernel, measured 660x slower than float32 on an AVX2 CPU):
        float32. The weights are then converted to float32 for the passes (in place, once), and back to the VAE's
        dtype when it moves to another device."""
        if generic_half(self.device.type, self.dtype):
            return torch.float32
        return self.dtype

    def _weight_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _weights_for_pass(self) -> torch.dtype:
        dtype = self.pass_dtype
        if self._weight_dtype() != dtype:
            if dtype != self.dtype:
                log.info("Wan VAE: this CPU has no native %s products; the VAE computes in float32 here",
                         str(self.dtype).replace("torch.", ""))
            self.model.to(dtype=dtype)
        return dtype

    # --- latent space ------------------------------------------------------------------------------------------
    @staticmethod
    def normalize(latents: torch.Tensor) -> torch.Tensor:
        return latent_stats.normalize(latents)

    @staticmethod
    def denormalize(latents: torch.Tensor) -> torch.Tensor:
        return latent_stats.denormalize(latents)

    # --- encode / decode ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, video: torch.Tensor, tiled: str | bool = "auto", tile_size: int = DEFAULT_TILE_SIZE,
               overlap: int = DEFAULT_OVERLAP, callback: ProgressCallback | None = None,
               output_device: torch.device | str | None = None) -> torch.Tensor:
        """Video [B, 3, F, H, W] in [-1, 1] -> raw latents [B, z, 1 + (F-1)//4, H/s, W/s], float32, on
        ``output_device`` (default: the VAE's device)."""
        video = self._check_video(video)
        tile_size, overlap = _check_tiles(tile_size, overlap)
        check_vae(self, "encode", video.shape, _tiled_mode(tiled) != "off", tile_size, self._out(output_device))
        s = self.stride[1]
        job = _Pass(self.model.encode_chunks, TileGrid.from_pixels(tile_size, overlap, s),
                    (video.shape[3] // s, video.shape[4] // s), in_scale=s, out_scale=1,
                    chunks=num_chunks(video.shape[2], self.stride[0]), out_device=self._out(output_device))
        return self._run(video, job, tiled, callback)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, tiled: str | bool = "auto", tile_size: int = DEFAULT_TILE_SIZE,
               overlap: int = DEFAULT_OVERLAP, callback: ProgressCallback | None = None,
               clamp: bool = True, output_device: torch.device | str | None = None) -> torch.Tensor:
        """Raw latents [B, z, T, h, w] -> video [B, 3, 1 + 4(T-1), h*s, w*s] in [-1, 1], float32, on
        ``output_device`` (default: the VAE's device; "cpu" keeps a long video off the GPU while it is decoded)."""
        latents = self._check_latents(latents)
        tile_size, overlap = _check_tiles(tile_size, overlap)
        s = self.stride[1]
        out_device = self._out(output_device)
        check_vae(self, "decode", latents.shape, _tiled_mode(tiled) != "off", tile_size, out_device)
        job = _Pass(partial(self.model.decode_chunks, out_device=out_device),
                    TileGrid.from_pixels(tile_size, overlap, s), tuple(latents.shape[3:]), in_scale=1, out_scale=s,
                    chunks=latents.shape[2], out_device=out_device)
        video = self._run(latents, job, tiled, callback)
        check_output(video, "VAE decode", [self.model], self.dtype)
        return video.clamp_(-1.0, 1.0) if clamp else video

    def _out(self, output_device) -> torch.device:
        return self.device if output_device is None else torch.device(output_device)

    def _run(self, x: torch.Tensor, job: "_Pass", tiled, callback: ProgressCallback | None) -> torch.Tensor:
        """One batch item at a time: whole frames, tiles, or whole frames falling back to tiles on out-of-memory."""
        mode = _tiled_mode(tiled)
        batch, outs, dtype = x.shape[0], [], self._weights_for_pass()
        for i in range(batch):
            item = x[i:i + 1].to(self.device, dtype)
            out = None if mode == "on" else self._whole(job, item, _Counter(callback, batch, i, job.chunks), mode)
            if out is None:
                out = job.tiled(item, _Counter(callback, batch, i, job.chunks * job.tile_count))
            outs.append(out)
        return outs[0] if batch == 1 else torch.cat(outs)

    def _whole(self, job: "_Pass", item: torch.Tensor, counter: "_Counter", mode: str) -> torch.Tensor | None:
        """The whole-frame pass, or None when it ran out of memory and tiles may be used instead.

        Returning (rather than retrying inside the ``except`` block) drops the failed pass's tensors first."""
        try:
            return job.whole(item, counter)
        except OutOfMemoryError:
            if mode == "off":
                raise
        log.warning("Wan VAE: out of memory for a %dx%d pass on %s; retrying in %d tiles",
                    item.shape[-2], item.shape[-1], self.device, job.tile_count)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return None

    # --- input checks -------------------------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[1] != 3:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise InputError(f"video to encode has shape {shape}; expected [batch, 3, frames, height, width] "
                             f"with values in [-1, 1]")
        _, _, frames, height, width = video.shape
        s = self.stride[1]
        if height % s or width % s or height == 0 or width == 0:
            raise InputError(f"video size {width}x{height} is not a multiple of {s} (the {VAE_NAME[self.z_dim]} "
                             f"compresses {s}x{s} pixels per latent); resize or crop it to e.g. "
                             f"{max(s, width // s * s)}x{max(s, height // s * s)}")
        if frames < 1:
            raise InputError("video to encode has no frames")
        check_input(video, "video to encode", "check the images connected to this node")
        step = self.stride[0]
        keep = 1 + (frames - 1) // step * step
        if keep != frames:
            log.warning("Wan VAE: %d frames is not %dn+1; encoding the first %d (the last %d are dropped, as in the "
                        "official encoder)", frames, step, keep, frames - keep)
            video = video[:, :, :keep]
        return video

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"latents to decode have shape {shape}; expected [batch, {self.z_dim}, frames, height, "
                             f"width] (video latents of the {VAE_NAME[self.z_dim]})")
        channels = latents.shape[1]
        if channels != self.z_dim:
            other = VAE_NAME.get(channels)
            what = f"{other} latents" if other else "not Wan latents"
            raise InputError(f"latents have {channels} channels ({what}) but this is the {VAE_NAME[self.z_dim]}: "
                             f"decode them with the VAE that matches the model that made them (Wan 2.1 / 2.2 A14B: "
                             f"Wan2.1_VAE; Wan 2.2 TI2V-5B: Wan2.2_VAE)")
        if latents.shape[2] < 1 or latents.shape[3] < 1 or latents.shape[4] < 1:
            raise InputError(f"latents to decode have an empty dimension: shape {tuple(latents.shape)}")
        check_input(latents, "latents to decode", "they come from the sampler, which stops on NaN itself: were "
                                                  "they edited or loaded from elsewhere?")
        return latents


@dataclass
class _Pass:
    """One encode or decode pass: the chunked function, how its input maps onto tiles, how many chunks per tile."""

    fn: Callable[[torch.Tensor, Callable[[], None]], torch.Tensor]
    grid: TileGrid
    latent_hw: tuple[int, int]
    in_scale: int  # input pixels per latent pixel
    out_scale: int  # output pixels per latent pixel
    chunks: int
    out_device: torch.device

    @property
    def tile_count(self) -> int:
        return self.grid.count(*self.latent_hw)

    def whole(self, x: torch.Tensor, tick) -> torch.Tensor:
        return self.fn(x, tick).to(self.out_device, torch.float32)

    def tiled(self, x: torch.Tensor, tick) -> torch.Tensor:
        return run_tiled(lambda tile: self.fn(tile, tick), x, self.grid, self.latent_hw, self.in_scale,
                         self.out_scale, self.out_device)


class _Counter:
    """Turns per-chunk ticks of batch item ``index`` into ``callback(done, total)`` calls."""

    def __init__(self, callback: ProgressCallback | None, batch: int, index: int, per_item: int):
        self.callback, self.total, self.done = callback, batch * per_item, index * per_item

    def __call__(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.total)


def _check_tiles(tile_size, overlap) -> tuple[int, int]:
    return whole_number(tile_size, "tile_size", 16, 1 << 16), whole_number(overlap, "overlap", 0, 1 << 15)


def _tiled_mode(tiled: str | bool) -> str:
    if tiled is True or tiled is False:
        return "on" if tiled else "off"
    if tiled not in TILED_MODES:
        raise InputError(f"tiled='{tiled}' is unknown; use 'auto' (whole frame, tiles if out of memory), 'on' or "
                         f"'off'")
    return tiled
