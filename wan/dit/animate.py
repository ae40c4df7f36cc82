"""The Wan 2.2 Animate-14B diffusion transformer: the 2.1 I2V-14B layout (36 input channels, CLIP image branch) plus
pose and face conditioning.

Semantics of the official ``WanAnimateModel`` (config ``wan_animate_14B``): the latent video has one extra frame in
front (the reference image); the pose latents of the clip (``pose_patch_embedding``, 16 channels) are added to the
patch tokens of every frame after it; the clip's face crops go through the motion encoder (``animate_motion``) and
the face encoder, giving face tokens per latent frame (zeros for the reference frame); after every ``every``-th
block (5 of 40) a face adapter block adds the tokens' attention to their frame's face tokens.

Sequence parallel (Ulysses, official ``use_context_parallel``): the video tokens (pose added) are split over the
ranks; in each face adapter block every rank gathers the queries of the whole sequence, attends to the face tokens
(every rank holds them all) and keeps the output of its own slice (as the official code).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..memory.offload import streamed
from .animate_face import FaceAdapter, FaceEncoder
from .animate_motion import MotionEncoder
from .compile import call_block
from .config import WanDiTConfig
from .model import DiTState, WanDiT, patchify

MOTION_BATCH = 8  # face crops per motion-encoder call (official encode_bs)
_BLUR_KERNEL = re.compile(r"^motion_encoder\.enc\.net_app\.convs\.\d+\.(conv2|skip)\.0\.kernel$")


@dataclass(frozen=True)
class AnimateConfig:
    widths: tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512, 512)  # motion encoder, 512 x 512 faces
    style_dim: int = 512
    motion_dim: int = 20
    motion_out: int = 512  # motion vector width (official motion_encoder_dim)
    linears: int = 5
    face_hidden: int = 1024
    face_heads: int = 4
    adapters: int = 8
    pose_dim: int = 16

    @property
    def face_size(self) -> int:
        """Side of the square face crops the motion encoder takes (512 for Wan 2.2 Animate-14B)."""
        return 2 ** (len(self.widths) + 1)

    @classmethod
    def from_state_dict(cls, sd: dict, num_layers: int) -> "AnimateConfig | None":
        """None unless the weights are an Animate DiT (official / Comfy-Org names)."""
        pose = sd.get("pose_patch_embedding.weight")
        if pose is None:
            return None
        try:
            convs = _indices(sd, r"motion_encoder\.enc\.net_app\.convs\.(\d+)\.")
            linears = _indices(sd, r"motion_encoder\.enc\.fc\.(\d+)\.")
            widths = (sd["motion_encoder.enc.net_app.convs.0.0.weight"].shape[0],) + tuple(
                sd[f"motion_encoder.enc.net_app.convs.{i}.conv2.1.weight"].shape[0] for i in range(1, convs - 1))
            style = sd[f"motion_encoder.enc.net_app.convs.{convs - 1}.weight"].shape[0]
            direction = sd["motion_encoder.dec.direction.weight"]
            conv1 = sd["face_encoder.conv1_local.conv.weight"]
            hidden = sd["face_encoder.conv2.conv.weight"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"the Animate DiT weights lack {exc} (motion or face encoder)") from exc
        adapters = _indices(sd, r"face_adapter\.fuser_blocks\.(\d+)\.")
        if not 0 < adapters <= num_layers:
            raise CheckpointError(f"the Animate DiT has {adapters} face adapter blocks for {num_layers} blocks; "
                                  f"expected 1 to {num_layers} (Wan 2.2 Animate-14B: 8 for 40)")
        return cls(widths=widths, style_dim=style, motion_dim=direction.shape[1], motion_out=direction.shape[0],
                   linears=linears, face_hidden=hidden, face_heads=conv1.shape[0] // hidden, adapters=adapters,
                   pose_dim=pose.shape[1])


def _indices(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def without_blur_kernels(sd: dict) -> dict:
    """The official files store the fixed blur kernels of the motion encoder as buffers; ours are computed."""
    return {k: v for k, v in sd.items() if not _BLUR_KERNEL.match(k)}


@dataclass
class AnimateInputs:
    """Per-clip conditioning of the Animate DiT.

    ``pose`` [B, 16, T - 1, h, w]: normalised latents of the clip's pose frames (the latent video has the reference
    frame in front); ``face`` [B, 3, F, S, S]: the clip's face crops in [-1, 1], F = 4 (T - 2) + 1 pixel frames."""

    pose: torch.Tensor
    face: torch.Tensor

    def unconditional(self) -> "AnimateInputs":
        """The official unconditional branch: the face crops all -1 (black)."""
        return AnimateInputs(self.pose, torch.full_like(self.face, -1.0))


@dataclass
class AnimateState(DiTState):
    face: torch.Tensor | None = None  # [B, T, heads + 1, dim] face tokens per latent frame


class WanAnimateDiT(WanDiT):
    def __init__(self, config: WanDiTConfig, animate: AnimateConfig, variant=None, role: str = "single",
                 attention: str = "auto"):
        super().__init__(config, variant, role, attention)
        cfg, a = config, animate
        self.animate_config = a
        self.pose_patch_embedding = nn.Conv3d(a.pose_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.motion_encoder = MotionEncoder(a.widths, a.style_dim, a.motion_dim, a.motion_out, a.linears)
        self.face_encoder = FaceEncoder(a.motion_out, cfg.dim, a.face_hidden, a.face_heads)
        self.face_adapter = FaceAdapter(cfg.dim, cfg.num_heads, a.adapters)

    @property
    def face_every(self) -> int:
        """A face adapter block follows DiT blocks 0, every, 2 every, ... (official: every 5th of 40)."""
        return self.config.num_layers // self.animate_config.adapters

    def forward(self, x, t, context, clip_fea=None, y=None, animate: AnimateInputs | None = None):
        """x [B, 16, T, h, w] (reference frame first), t [B], context [B, L, text_dim], clip_fea [B, 257, 1280],
        y [B, 20, T, h, w], ``animate`` the clip's pose latents and face crops -> velocity [B, 16, T, h, w]."""
        state = self.prepare(x, t, context, clip_fea, y, animate)
        return self.finish(self.run_blocks(state), state)

    def prepare(self, x, t, context, clip_fea=None, y=None, animate: AnimateInputs | None = None) -> AnimateState:
        base = super().prepare(x, t, context, clip_fea, y, shard_tokens=False)
        self._check_animate(animate, x)
        dtype, b = self.compute_dtype, x.shape[0]
        _, h, w = base.grid
        pose, _ = patchify(animate.pose.to(dtype).expand(b, -1, -1, -1, -1), self.pose_patch_embedding)
        first = h * w  # the reference frame's tokens get no pose
        tokens = torch.cat([base.x[:, :first], base.x[:, first:] + pose.float()], dim=1)
        face = self.encode_face(animate.face.expand(b, -1, -1, -1, -1))
        e, e0, freqs, shard = base.e, base.e0, base.freqs, None
        if self.sequence_parallel is not None:  # this rank's slice of the tokens (and of per-token timesteps)
            shard = self.sequence_parallel.shard(tokens.shape[1])
            tokens, freqs = shard.split(tokens, dim=1), shard.split(freqs, dim=0)
            e, e0 = (v if v.shape[1] == 1 else shard.split(v, dim=1) for v in (e, e0))
        return AnimateState(tokens, e, e0, base.context, base.n_img, freqs, base.grid, shard, face=face)

    def encode_face(self, face: torch.Tensor) -> torch.Tensor:
        """Face crops [B, 3, F, S, S] -> face tokens [B, 1 + (F - 1) // 4 + 1, heads + 1, dim] (zeros first)."""
        b, _, frames = face.shape[:3]
        dtype = self.compute_dtype
        crops = face.transpose(1, 2).flatten(0, 1)
        motion = torch.cat([self.motion_encoder(c, dtype) for c in crops.split(MOTION_BATCH)])
        tokens = self.face_encoder(motion.view(b, frames, -1), dtype)
        return torch.cat([torch.zeros_like(tokens[:, :1]), tokens], dim=1)

    def run_blocks(self, s: AnimateState) -> torch.Tensor:
        x, every, adapters, shard = s.x, self.face_every, self.face_adapter.fuser_blocks, s.shard
        self_attn = None if shard is None else shard.attention(self._attn)
        for i, block in enumerate(streamed(self, x)):
            x = call_block(self, block, x, s.e0, s.context, s.n_img, s.freqs, self._attn, self_attn)
            if i % every == 0 and i // every < len(adapters):
                x = x + adapters[i // every](x, s.face, self._attn, shard).float()
        return x

    def _check_animate(self, a: AnimateInputs | None, x: torch.Tensor) -> None:
        if not isinstance(a, AnimateInputs):
            raise InputError("this Wan Animate model needs its conditioning (animate=AnimateInputs: pose latents and "
                             "face crops); make it with Wan Animate")
        b, _, f, h, w = x.shape
        if f < 2:
            raise InputError(f"the Animate latent {tuple(x.shape)} needs the reference frame and at least one more")
        pose, face, size = a.pose, a.face, self.animate_config.face_size
        want = (self.animate_config.pose_dim, f - 1, h, w)
        if not torch.is_tensor(pose) or pose.dim() != 5 or pose.shape[0] not in (1, b) or tuple(pose.shape[1:]) != want:
            raise InputError(f"the Animate pose latents must be [1 or {b}, {', '.join(map(str, want))}] (one frame "
                             f"fewer than the latent {tuple(x.shape)}, whose first frame is the reference); got "
                             f"{_shape(pose)}")
        frames = 4 * (f - 2) + 1
        if (not torch.is_tensor(face) or face.dim() != 5 or face.shape[0] not in (1, b)
                or tuple(face.shape[1:]) != (3, frames, size, size)):
            raise InputError(f"the Animate face crops must be [1 or {b}, 3, {frames}, {size}, {size}] (RGB in [-1, 1], "
                             f"one per video frame of the clip, {size}x{size}); got {_shape(face)}")


def _shape(v) -> str:
    return str(tuple(v.shape)) if torch.is_tensor(v) else type(v).__name__
