"""The S2V audio encoder: wav2vec2 (transformers ``Wav2Vec2Model``) from the official folder inside the S2V
checkpoint (``wav2vec2-large-xlsr-53-english``: config.json + weights, a ``Wav2Vec2ForCTC``) or a Comfy-Org single
file (``wav2vec2_large_english_fp16.safetensors``, transformers names, optionally ``wav2vec2.``-prefixed).

``encode(audio)`` -> ``AudioEmbeds``: all hidden states (25 for wav2vec2-large) at 30 per second, as the official
``extract_audio_feat(return_all_layers=True)``; the per-frame buckets are cut per clip at sampling time
(``audio_features.frame_buckets``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..budget.check import BudgetError, available_bytes
from ..weights.checkpoint import read_state_dict, strip_prefix, wrong_kind_message
from ..errors import CheckpointError, InputError
from ..finite import check_output
from ..weights.assign import compute_dtype
from .audio_features import (FEATURE_RATE, SAMPLE_RATE, STATES_PER_SECOND, check_audio, normalize, to_mono_16k,
                             to_video_rate)
from .placement import running_on

log = logging.getLogger("wan_experts")

OFFICIAL_FOLDER = "wav2vec2-large-xlsr-53-english"
MAX_SECONDS = 3600.0  # one encoder pass over the whole track (official); beyond this the attention alone is too big
HEAD_DIM = 64  # wav2vec2 base and large


@dataclass
class AudioEmbeds:
    """``WAN_AUDIO_EMBEDS``: wav2vec2 hidden states of a track at 30 per second, [layers, N, width] float32 (CPU),
    and the track's length in seconds."""

    states: torch.Tensor
    seconds: float

    @property
    def frames(self) -> int:
        return self.states.shape[1]


class AudioEncoder(nn.Module):
    """``WAN_AUDIO_ENCODER``. ``run_device`` / ``keep_loaded`` as for the text encoder."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, normalize: bool, source: str = "", layout: str = ""):
        super().__init__()
        self.model = model
        self.compute_dtype, self.normalize, self.source, self.layout = dtype, normalize, source, layout
        self.run_device: torch.device | None = None
        self.keep_loaded = True

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def states(self) -> int:
        return self.model.config.num_hidden_layers + 1

    @torch.no_grad()
    def encode(self, audio) -> AudioEmbeds:
        """ComfyUI ``AUDIO`` (the first item of a batch) -> its wav2vec2 states at 30 per second."""
        wave, rate = check_audio(audio)
        seconds = wave.shape[-1] / rate
        self.check_budget(seconds)
        samples = to_mono_16k(wave, rate)
        if samples.shape[0] < SAMPLE_RATE // STATES_PER_SECOND * 2:
            raise InputError(f"the audio is {seconds * 1000:.1f} ms long; speech-to-video needs at least 40 ms "
                             f"(one video frame needs about 63 ms)")
        if not np.any(samples):
            raise InputError("the audio is silent (every sample is 0): there is nothing to lip-sync; connect the "
                             "speech or song track")
        values = normalize(samples) if self.normalize else samples
        with running_on(self.model, self.run_device, stay=self.keep_loaded) as device:
            x = torch.from_numpy(values)[None].to(device=device, dtype=self.compute_dtype)
            out = self.model(x, output_hidden_states=True)
            states = torch.cat([h.float() for h in out.hidden_states]).cpu()  # [L, T, C]
        check_output(states, "the audio encoder", [self.model], self.compute_dtype)
        return AudioEmbeds(to_video_rate(states), seconds)

    def check_budget(self, seconds: float) -> None:
        """Refuse before encoding what one pass cannot hold: the official encoder attends over the whole track."""
        if seconds > MAX_SECONDS:
            raise BudgetError(f"the audio is {seconds / 3600:.1f} hours long; the audio encoder reads a track in one "
                              f"pass and takes at most {MAX_SECONDS / 3600:.0f} hour. Cut the track (a clip of 80 "
                              f"frames covers 5 seconds)")
        tokens = int(seconds * STATES_PER_SECOND) + 1
        heads = max(1, self.width // HEAD_DIM)
        need = tokens * tokens * heads * 4 + tokens * self.width * self.states * 4 * 2
        device = self.run_device or next(self.model.parameters()).device
        free = available_bytes(device)
        if free is not None and need > free:
            most = int((free / (heads * 4)) ** 0.5 / STATES_PER_SECOND)
            raise BudgetError(f"encoding {seconds:.0f} s of audio needs about {need / 2**30:.1f} GiB on {device} "
                              f"(attention over the whole track); {free / 2**30:.1f} GiB is free. Use at most about "
                              f"{most} s of audio, or free memory")


def load_audio_encoder(path, dtype=None, device="cpu") -> AudioEncoder:
    """Load wav2vec2: the official folder (or the S2V checkpoint folder holding it), or a single safetensors file."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    path = Path(path)
    if path.is_dir() and (path / OFFICIAL_FOLDER).is_dir():
        path = path / OFFICIAL_FOLDER
    raw = read_state_dict(path, what="audio encoder file")
    sd = _model_keys(raw)
    if "encoder.layer_norm.bias" not in sd or "feature_projection.projection.weight" not in sd:
        raise CheckpointError(wrong_kind_message(path, "a wav2vec2 audio encoder", raw.keys()))
    config = _config(path, sd)
    compute = compute_dtype(dtype, sd["encoder.layers.0.attention.q_proj.weight"].dtype, torch.float32)
    with torch.device("meta"):
        model = Wav2Vec2Model(config)
    sd = {k: v.to(compute) for k, v in sd.items()}
    missing, unexpected = _load(model, sd)
    if missing or unexpected:
        raise CheckpointError(f"'{path.name}' does not match a wav2vec2 model of its own size: "
                              f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:3]}) keys")
    model = model.requires_grad_(False).eval().to(device)
    encoder = AudioEncoder(model, compute, _normalizes(path, config), str(path), "transformers wav2vec2")
    log.info("Loaded audio encoder wav2vec2 (width %d, %d layers) from %s, compute %s", config.hidden_size,
             config.num_hidden_layers, path.name, str(compute).replace("torch.", ""))
    return encoder


def _model_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``Wav2Vec2Model`` names: drop a ``wav2vec2.`` prefix and the CTC head; old weight-norm names
    (``weight_g`` / ``weight_v``) become the parametrization's ``original0`` / ``original1``."""
    sd = {k[len("wav2vec2."):] if k.startswith("wav2vec2.") else k: v for k, v in strip_prefix(sd).items()}
    renames = {"conv.weight_g": "conv.parametrizations.weight.original0",
               "conv.weight_v": "conv.parametrizations.weight.original1"}
    out = {}
    for k, v in sd.items():
        if k.startswith(("lm_head.", "quantizer.", "project_")):
            continue
        for old, new in renames.items():
            k = k.replace(old, new)
        out[k] = v
    return out


def _config(path: Path, sd: dict[str, torch.Tensor]):
    """transformers config: the folder's config.json, else read off the shapes (Comfy-Org single file)."""
    from transformers import Wav2Vec2Config

    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    if cfg_file.is_file():
        try:
            data = json.loads(cfg_file.read_text())
        except ValueError as exc:
            raise CheckpointError(f"'{cfg_file}' is not valid JSON: {exc}") from exc
        if data.get("model_type") == "wav2vec2":
            return Wav2Vec2Config(**{k: v for k, v in data.items() if k not in ("architectures",)})
    width = sd["encoder.layer_norm.bias"].shape[0]
    layers = len({k.split(".")[2] for k in sd if k.startswith("encoder.layers.")})
    convs = sorted({int(k.split(".")[2]) for k in sd if k.startswith("feature_extractor.conv_layers.")})
    conv_w = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in convs]
    pos = sd["encoder.pos_conv_embed.conv.parametrizations.weight.original1"]
    stable = "feature_extractor.conv_layers.1.layer_norm.weight" in sd
    return Wav2Vec2Config(
        hidden_size=width, num_hidden_layers=layers, num_attention_heads=max(1, width // HEAD_DIM),
        intermediate_size=sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        conv_dim=tuple(w.shape[0] for w in conv_w), conv_kernel=tuple(w.shape[2] for w in conv_w),
        conv_stride=(5,) + (2,) * (len(conv_w) - 1), conv_bias="feature_extractor.conv_layers.1.conv.bias" in sd,
        feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable,
        num_conv_pos_embeddings=pos.shape[2], num_conv_pos_embedding_groups=width // pos.shape[1])


def _normalizes(path: Path, config) -> bool:
    """``do_normalize`` of the folder's preprocessor_config.json; a single file: True for the large (layer-norm)
    models, which are trained with it (as ComfyUI decides)."""
    pre = (path if path.is_dir() else path.parent) / "preprocessor_config.json"
    if pre.is_file():
        try:
            return bool(json.loads(pre.read_text()).get("do_normalize", True))
        except ValueError:
            pass
    return config.feat_extract_norm == "layer"


def _load(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    result = model.load_state_dict(sd, strict=False, assign=True)
    return sorted(result.missing_keys), sorted(result.unexpected_keys)
