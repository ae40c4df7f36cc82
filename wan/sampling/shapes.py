"""Pixel size and frame count -> latent shape, with the rules the models impose (checked before any work)."""
from __future__ import annotations

from ..budget.check import check_video_size
from ..checks import whole_number
from ..errors import InputError

PATCH = 2  # spatial patch of every Wan DiT


def latent_shape(width: int, height: int, frames: int, z_dim: int, batch: int = 1,
                 stride: tuple[int, int, int] | None = None) -> tuple[int, int, int, int, int]:
    """[B, C, T, h, w] of the latents of a ``frames`` x ``height`` x ``width`` video for a VAE with ``z_dim``
    channels (16: Wan 2.1 VAE, stride 4x8x8; 48: Wan 2.2 VAE, stride 4x16x16)."""
    width, height, frames, batch = (whole_number(v, n) for v, n in
                                    ((width, "width"), (height, "height"), (frames, "frames"), (batch, "batch")))
    if stride is None:
        stride = {16: (4, 8, 8), 48: (4, 16, 16)}.get(z_dim)
        if stride is None:
            raise InputError(f"latent channels must be 16 (Wan 2.1 VAE) or 48 (Wan 2.2 VAE); got {z_dim}")
    check_frames(frames, stride[0])
    multiple = stride[1] * PATCH
    vae = "Wan 2.2 VAE (TI2V-5B)" if z_dim == 48 else "Wan 2.1 VAE"
    for name, value in (("width", width), ("height", height)):
        if value < multiple or value % multiple:
            fix = max(multiple, round(value / multiple) * multiple)
            raise InputError(f"{name} {value} is not a multiple of {multiple} pixels, which the {vae} and the "
                             f"DiT patch need; use {fix}")
    if batch < 1:
        raise InputError(f"batch must be at least 1; got {batch}")
    shape = batch, z_dim, (frames - 1) // stride[0] + 1, height // stride[1], width // stride[2]
    check_video_size(batch, (shape[2], shape[3] // PATCH, shape[4] // PATCH), (width, height))
    return shape


def check_frames(frames: int, t_stride: int = 4) -> None:
    frames = whole_number(frames, "frames")
    if frames < 1 or (frames - 1) % t_stride:
        fix = max(1, round((frames - 1) / t_stride) * t_stride + 1)
        raise InputError(f"frames {frames} is not of the form {t_stride}n+1 (1, 5, 9, ..., 81, ..., 121) that the "
                         f"Wan VAE needs; use {fix}")
