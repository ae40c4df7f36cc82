"""The Wan 2.2 S2V-14B diffusion transformer: the Wan DiT plus audio, a reference image, past motion and pose.

Semantics of the official ``WanModel_S2V`` (config ``wan_s2v_14B``): the clip's noisy tokens (plus the pose latents
through ``cond_encoder``) are followed by the reference image's tokens (rotary frame position 30) and the
frame-packed motion tokens of the previous frames (negative frame positions); a learned embedding per kind
(``trainable_cond_mask``: 0 noisy, 1 reference, 2 motion) is added; reference and motion tokens are modulated with
timestep 0 (``zero_timestep``); after the blocks in ``audio_inject_layers`` the noisy tokens of each latent frame
attend to that frame's audio tokens (AdaIN first); the head reads the noisy tokens only.

Sequence parallel (Ulysses, official ``use_sp``): the whole sequence (noisy, reference and motion tokens) is split
over the ranks, each slice modulated by the timestep of its tokens' kind; before each audio injection the tokens are
gathered, the injection runs on the whole sequence, and each rank takes its slice again (as the official code).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, InputError
from ..weights.ops import layer_norm
from ..memory.offload import streamed
from .config import WanDiTConfig
from .compile import call_block
from .model import Block, DiTState, WanDiT, patchify, sinusoid
from .rope import position_freqs
from .s2v_audio import CausalAudioEncoder, AudioInjector
from .s2v_motion import FramePacker

OFFICIAL_INJECT_LAYERS = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)  # wan_s2v_14B, 40 blocks
MOTION_FRAMES = 73  # pixel frames carried between clips (19 latent frames)
REF_FRAME_POSITION = 30  # rotary frame position of the reference image's tokens
NOISY, REFERENCE, MOTION = 0, 1, 2  # rows of trainable_cond_mask


@dataclass(frozen=True)
class S2VConfig:
    audio_dim: int = 1024  # wav2vec2 hidden size
    num_audio_tokens: int = 4
    inject_layers: tuple[int, ...] = OFFICIAL_INJECT_LAYERS
    adain: bool = True
    cond_dim: int = 16  # pose latent channels (0: no pose input)
    zero_timestep: bool = True

    @classmethod
    def from_state_dict(cls, sd: dict, dim: int, num_layers: int, source: Path | None = None) -> "S2VConfig | None":
        """None unless the weights are an S2V DiT (official / Comfy-Org names)."""
        conv = sd.get("casual_audio_encoder.encoder.conv1_local.conv.weight")
        if conv is None:
            return None
        if any(k.startswith("motioner.") for k in sd):
            raise CheckpointError("this S2V DiT uses the transformer motioner, which no released model has; only the "
                                  "frame-pack motion compression (frame_packer.*) of Wan 2.2 S2V-14B is supported")
        injectors = {int(k.split(".")[2]) for k in sd if k.startswith("audio_injector.injector.")}
        cond = sd.get("cond_encoder.weight")
        return cls(audio_dim=conv.shape[1], num_audio_tokens=conv.shape[0] // (dim // 4),
                   inject_layers=inject_layers(len(injectors), num_layers, source),
                   adain=any(k.startswith("audio_injector.injector_adain_layers.") for k in sd),
                   cond_dim=0 if cond is None else cond.shape[1])


def inject_layers(count: int, num_layers: int, source: Path | None) -> tuple[int, ...]:
    """The blocks the audio injectors follow: ``audio_inject_layers`` of an official folder's config.json, the
    official list for the 40-block model, else every ``num_layers // count``-th block from 0 (files carry no list)."""
    cfg = (source if source is not None and source.is_dir() else getattr(source, "parent", None))
    cfg_file = cfg / "config.json" if cfg is not None else None
    if cfg_file is not None and cfg_file.is_file():
        try:
            layers = json.loads(cfg_file.read_text()).get("audio_inject_layers")
        except ValueError:
            layers = None
        if layers and len(layers) == count:
            return tuple(int(i) for i in layers)
    if (count, num_layers) == (len(OFFICIAL_INJECT_LAYERS), 40):
        return OFFICIAL_INJECT_LAYERS
    if count == 0 or count > num_layers:
        raise CheckpointError(f"the S2V DiT has {count} audio injectors for {num_layers} blocks; expected 1 to "
                              f"{num_layers} (Wan 2.2 S2V-14B: 12 for 40 blocks)")
    return tuple(range(0, num_layers, num_layers // count))[:count]


@dataclass
class S2VInputs:
    """Per-clip conditioning of the S2V DiT, all latents normalised (Wan 2.1 VAE, 16 channels).

    ``audio`` [B, 25, C_a, 4 * T] wav2vec2 hidden states per video frame of the clip (zeros for the unconditional
    branch); ``ref`` [B, 16, 1, h, w] the reference image; ``motion`` [B, 16, T_m, h, w] the latents of the frames
    before the clip; ``pose`` [B, 16, T, h, w] or None (zeros: no pose); ``drop_motion``: ignore ``motion`` (the
    first clip, official ``drop_first_motion``)."""

    audio: torch.Tensor
    ref: torch.Tensor
    motion: torch.Tensor
    pose: torch.Tensor | None = None
    drop_motion: bool = False

    def without_audio(self) -> "S2VInputs":
        return S2VInputs(torch.zeros_like(self.audio), self.ref, self.motion, self.pose, self.drop_motion)


class S2VBlock(Block):
    """A Wan block whose modulation has two segments: the noisy tokens (timestep t) and the reference and motion
    tokens after them (timestep 0); ``e0`` [B, 2, 6, C], ``split`` the number of noisy tokens."""

    def forward(self, x, e0, context, n_img, freqs, attn, self_attn=None, split: int = 0):
        dtype = context.dtype
        shift_msa, scale_msa, gate_msa, shift_ffn, scale_ffn, gate_ffn = (self.modulation.float().unsqueeze(1) + e0
                                                                          ).unbind(2)  # each [B, 2, C]
        h = _modulate(layer_norm(x, eps=self.eps), shift_msa, scale_msa, split)
        x = x + _gate(self.self_attn(h.to(dtype), freqs, self_attn or attn).float(), gate_msa, split)
        x = x + self.cross_attn(self.norm3(x).to(dtype), context, n_img, attn).float()
        h = _modulate(layer_norm(x, eps=self.eps), shift_ffn, scale_ffn, split)
        return x + _gate(self.ffn(h.to(dtype)).float(), gate_ffn, split)


def _modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, split: int) -> torch.Tensor:
    """h * (1 + scale) + shift with row 0 of [B, 2, C] for the first ``split`` tokens and row 1 for the rest."""
    return torch.cat([h[:, :split] * (1 + scale[:, :1]) + shift[:, :1],
                      h[:, split:] * (1 + scale[:, 1:]) + shift[:, 1:]], dim=1)


def _gate(y: torch.Tensor, gate: torch.Tensor, split: int) -> torch.Tensor:
    return torch.cat([y[:, :split] * gate[:, :1], y[:, split:] * gate[:, 1:]], dim=1)


@dataclass
class S2VState(DiTState):
    split: int = 0  # noisy tokens (the rest: reference and motion)
    audio: torch.Tensor | None = None  # [B, T, n + 1, C]
    audio_global: torch.Tensor | None = None  # [B, T, 1, C]


class WanS2VDiT(WanDiT):
    def __init__(self, config: WanDiTConfig, s2v: S2VConfig, variant=None, role: str = "single",
                 attention: str = "auto"):
        super().__init__(config, variant, role, attention)
        cfg = config
        self.s2v_config = s2v
        self.blocks = nn.ModuleList(S2VBlock(cfg) for _ in range(cfg.num_layers))
        if s2v.cond_dim:
            self.cond_encoder = nn.Conv3d(s2v.cond_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.casual_audio_encoder = CausalAudioEncoder(s2v.audio_dim, cfg.dim, s2v.num_audio_tokens, s2v.adain)
        self.audio_injector = AudioInjector(cfg.dim, cfg.num_heads, cfg.eps, s2v.inject_layers, s2v.adain)
        self.trainable_cond_mask = nn.Embedding(3, cfg.dim)
        self.frame_packer = FramePacker(cfg.dim, cfg.out_dim)

    def forward(self, x, t, context, clip_fea=None, y=None, s2v: S2VInputs | None = None):
        """x [B, 16, T, h, w], t [B], context [B, L, text_dim], ``s2v`` the clip's conditioning -> velocity."""
        state = self.prepare(x, t, context, clip_fea, y, s2v)
        return self.finish(self.run_blocks(state), state)

    def prepare(self, x, t, context, clip_fea=None, y=None, s2v: S2VInputs | None = None) -> S2VState:
        base = super().prepare(x, t, context, clip_fea, y, shard_tokens=False)
        self._check_s2v(s2v, x)
        cfg, dtype, b = self.config, self.compute_dtype, x.shape[0]
        tokens = base.x
        if s2v.pose is not None:
            tokens = tokens + patchify(s2v.pose.to(dtype).expand(b, -1, -1, -1, -1), self.cond_encoder)[0].float()
        elif self.s2v_config.cond_dim:  # no pose: the official model encodes zeros, which leaves the bias
            tokens = tokens + self.cond_encoder.bias.to(dtype).float()
        ref, _ = patchify(s2v.ref.to(dtype).expand(b, -1, -1, -1, -1), self.patch_embedding)
        (f, h, w), hd, dev = base.grid, cfg.head_dim, tokens.device
        parts, kinds = [tokens, ref.float()], [NOISY, REFERENCE]
        freqs = [base.freqs, position_freqs([REF_FRAME_POSITION], range(h), range(w), hd, dev)]
        if not s2v.drop_motion:
            motion, motion_freqs = self.frame_packer(s2v.motion.expand(b, -1, -1, -1, -1), hd, dtype)
            parts.append(motion)
            freqs.append(motion_freqs)
            kinds.append(MOTION)
        mask = self.trainable_cond_mask.weight.float()
        tokens = torch.cat([p + mask[k] for p, k in zip(parts, kinds)], dim=1)
        e0 = base.e0
        if self.s2v_config.zero_timestep:
            t0 = sinusoid(cfg.freq_dim, torch.zeros(1, 1, device=x.device)).float()
            zero = self.time_projection(self.time_embedding(t0))
            e0 = torch.cat([e0, zero.unflatten(-1, (6, cfg.dim)).expand(b, -1, -1, -1)], dim=1)
        else:
            e0 = e0.expand(-1, 2, -1, -1)
        audio_global, audio = self.encode_audio(s2v.audio, f)
        freqs, shard = torch.cat(freqs, dim=0), None
        if self.sequence_parallel is not None:  # this rank's slice of the whole sequence
            shard = self.sequence_parallel.shard(tokens.shape[1])
            tokens, freqs = shard.split(tokens, dim=1), shard.split(freqs, dim=0)
        return S2VState(tokens, base.e, e0, base.context, 0, freqs, base.grid, shard,
                        split=base.x.shape[1], audio=audio.to(dtype), audio_global=audio_global)

    def encode_audio(self, audio: torch.Tensor, latent_frames: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The clip's audio features [B, 25, C_a, 4 T] -> per latent frame (global, tokens), after 73 copies of the
        first frame stand in for the motion frames (official), whose 19 latent frames are then cut."""
        lead = audio[..., :1].expand(*audio.shape[:-1], MOTION_FRAMES)
        glob, local = self.casual_audio_encoder(torch.cat([lead, audio], dim=-1))
        past = (MOTION_FRAMES + 3) // 4
        local = local[:, past:]
        if local.shape[1] != latent_frames:
            raise InputError(f"the audio features cover {local.shape[1]} latent frames ({audio.shape[-1]} video "
                             f"frames) but the clip has {latent_frames}; pass 4 audio frames per latent frame")
        return (None if glob is None else glob[:, past:]), local

    def run_blocks(self, s: S2VState) -> torch.Tensor:
        """The noisy tokens after the blocks (whole, on every rank)."""
        x, dtype, shard = s.x, self.compute_dtype, s.shard
        self_attn = None if shard is None else shard.attention(self._attn)
        split = s.split if shard is None else min(max(s.split - shard.start, 0), shard.local)  # in this slice
        for i, block in enumerate(streamed(self, x)):
            x = call_block(self, block, x, s.e0, s.context, s.n_img, s.freqs, self._attn, self_attn, split=split)
            if shard is not None and self.audio_injector.injects_after(i):
                x = shard.split(self.audio_injector(shard.gather(x), i, s.audio, s.audio_global, s.split, dtype,
                                                    self._attn), dim=1)
            else:
                x = self.audio_injector(x, i, s.audio, s.audio_global, s.split, dtype, self._attn)
        return (x if shard is None else shard.gather(x))[:, :s.split]

    def finish(self, x: torch.Tensor, s: S2VState) -> torch.Tensor:
        return super().finish(x, replace(s, shard=None))  # run_blocks gathered the tokens already

    def _check_s2v(self, s2v: S2VInputs | None, x: torch.Tensor) -> None:
        if not isinstance(s2v, S2VInputs):
            raise InputError("this Wan S2V model needs its conditioning (s2v=S2VInputs: audio features, reference "
                             "image latent, motion latents); make it with Wan Sound To Video")
        b, c, f, h, w = x.shape
        checks = [("reference latent", s2v.ref, (c, 1, h, w)), ("motion latents", s2v.motion, (c, None, h, w))]
        if s2v.pose is not None:
            checks.append(("pose latents", s2v.pose, (self.s2v_config.cond_dim, f, h, w)))
        for name, value, want in checks:
            if (not torch.is_tensor(value) or value.dim() != 5 or value.shape[0] not in (1, b)
                    or any(n is not None and n != v for n, v in zip(want, value.shape[1:]))):
                shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise InputError(f"the S2V {name} must be [1 or {b}, {', '.join(str(n or 'T') for n in want)}] to fit "
                                 f"the latent {tuple(x.shape)}; got {shape}")
        a = s2v.audio
        if not torch.is_tensor(a) or a.dim() != 4 or a.shape[2] != self.s2v_config.audio_dim or a.shape[-1] != 4 * f:
            shape = tuple(a.shape) if torch.is_tensor(a) else type(a).__name__
            raise InputError(f"the S2V audio features must be [B, 25, {self.s2v_config.audio_dim}, {4 * f}] (wav2vec2 "
                             f"states per video frame of the clip); got {shape}. Use the audio encoder that belongs to "
                             f"the model (wav2vec2-large, 1024 wide)")
        if h % 8 or w % 8:
            raise InputError(f"the S2V latent is {h}x{w}; the motion compression needs multiples of 8 (pixel sizes "
                             f"multiple of 64, as the official size rule gives)")
