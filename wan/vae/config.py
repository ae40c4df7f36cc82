"""The shape of a Wan VAE, read off its (official-key) state dict."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import CheckpointError

VERSIONS = ("2.1", "2.2")


@dataclass(frozen=True)
class WanVAEConfig:
    version: str = "2.1"  # "2.1": plain blocks, z 16; "2.2": 2x2 patchify + residual stages, z 48
    z_dim: int = 16
    dim: int = 96  # encoder base width
    dec_dim: int = 96  # decoder base width
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_down: tuple[bool, ...] = (False, True, True)  # per encoder stage; the decoder mirrors it

    @property
    def patch(self) -> int:
        return 2 if self.version == "2.2" else 1

    @property
    def stride(self) -> tuple[int, int, int]:
        """(time, height, width) compression."""
        spatial = 2 ** (len(self.dim_mult) - 1) * self.patch
        return (2 ** sum(self.temporal_down), spatial, spatial)

    @property
    def temporal_up(self) -> tuple[bool, ...]:
        return tuple(reversed(self.temporal_down))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "WanVAEConfig":
        """Read the config from official-key weights (stage widths, block counts, which stages resample time)."""
        version = "2.2" if any(k.startswith("encoder.downsamples.0.downsamples.") for k in sd) else "2.1"
        try:
            dim = sd["encoder.conv1.weight"].shape[0]
            dec_dim = sd["decoder.head.0.gamma"].shape[0]
            z_dim = sd["conv2.weight"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"the weights lack {exc}, which every Wan VAE has") from exc
        stages = _encoder_stages(sd, version)
        if not stages:
            raise CheckpointError("the weights have no encoder stages ('encoder.downsamples.*')")
        widths = [width for width, _, _ in stages]
        if any(w % dim for w in widths):
            raise CheckpointError(f"encoder stage widths {widths} are not multiples of the base width {dim}")
        return cls(version=version, z_dim=z_dim, dim=dim, dec_dim=dec_dim,
                   dim_mult=tuple(w // dim for w in widths), num_res_blocks=stages[0][1],
                   temporal_down=tuple(t for _, _, t in stages[:-1]))


def _encoder_stages(sd: dict[str, torch.Tensor], version: str) -> list[tuple[int, int, bool]]:
    """(output width, residual blocks, halves time) per encoder stage."""
    if version == "2.2":
        return [_stage_2_2(sd, i) for i in sorted(_indices(sd, r"encoder\.downsamples\.(\d+)\."))]
    stages, blocks, width = [], 0, 0
    for i in sorted(_indices(sd, r"encoder\.downsamples\.(\d+)\.")):
        prefix = f"encoder.downsamples.{i}."
        if prefix + "resample.1.weight" in sd:
            stages.append((width, blocks, prefix + "time_conv.weight" in sd))
            blocks = 0
        else:
            blocks, width = blocks + 1, sd[prefix + "residual.6.weight"].shape[0]
    return stages + [(width, blocks, False)]


def _stage_2_2(sd: dict[str, torch.Tensor], i: int) -> tuple[int, int, bool]:
    prefix = f"encoder.downsamples.{i}.downsamples."
    blocks = [j for j in _indices(sd, re.escape(prefix) + r"(\d+)\.residual\.")]
    width = sd[f"{prefix}{max(blocks)}.residual.6.weight"].shape[0]
    return width, len(blocks), any(k.startswith(prefix) and k.endswith("time_conv.weight") for k in sd)


def _indices(sd, pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in sd if (m := rx.match(k))}


WAN21_VAE = WanVAEConfig()
WAN22_VAE = WanVAEConfig(version="2.2", z_dim=48, dim=160, dec_dim=256)
