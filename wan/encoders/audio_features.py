"""Audio preparation and the official S2V feature layout (``wan/modules/s2v/audio_encoder.py``).

- ``to_mono_16k``: any waveform (ComfyUI ``AUDIO`` [B, C, S] or [C, S], any rate) -> 16 kHz mono float32, with
  PyAV's resampler (libswresample). The official code loads with ``librosa.load(path, sr=16000)`` (soxr); the
  difference is measured in ``tests/test_s2v_audio.py`` and stated in the README.
- wav2vec2 gives 50 states per second; ``to_video_rate`` interpolates them (linear, align_corners) to 30 per second.
- ``frame_buckets``: one feature per video frame at ``fps`` for ``clips * frames_per_clip`` frames, as the official
  ``get_audio_embed_bucket_fps`` picks them (nearest 30 fps state; zeros after the end of the audio), and the
  number of clips the audio allows (``int(states / (frames_per_clip * 30 / fps)) + 1``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

SAMPLE_RATE = 16000
STATES_PER_SECOND = 50  # wav2vec2: one state per 320 samples at 16 kHz
FEATURE_RATE = 30  # official ``AudioEncoder.video_rate``
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor zero-mean unit-variance normalisation


def check_audio(audio) -> tuple[torch.Tensor, int]:
    """ComfyUI ``AUDIO`` ({"waveform": [B, C, S], "sample_rate": int}) -> (waveform [C, S] of the first item, rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"audio must be ComfyUI AUDIO ({{'waveform': [B, C, S], 'sample_rate': int}}), e.g. from "
                         f"Load Audio; got {type(audio).__name__}")
    wave, rate = audio["waveform"], audio["sample_rate"]
    if not torch.is_tensor(wave) or wave.dim() not in (2, 3) or wave.shape[-1] == 0 or 0 in wave.shape:
        shape = tuple(wave.shape) if torch.is_tensor(wave) else type(wave).__name__
        raise InputError(f"the audio waveform must be [B, channels, samples] with samples > 0; got {shape}. "
                         f"Load a file with sound in it")
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1000 <= rate <= 384000:
        raise InputError(f"the audio sample rate must be a whole number of Hz from 1000 to 384000; got {rate!r}")
    wave = wave[0] if wave.dim() == 3 else wave
    if not torch.isfinite(wave).all():
        raise InputError("the audio waveform holds NaN or infinite samples; check the node that made it")
    return wave.float().cpu(), rate


def to_mono_16k(wave: torch.Tensor, rate: int) -> np.ndarray:
    """[C, S] float at ``rate`` -> float32 [S'] mono at 16 kHz (channels averaged, then resampled by PyAV)."""
    import av

    mono = wave.float().mean(dim=0).numpy().astype(np.float32)
    if rate == SAMPLE_RATE:
        return mono
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="fltp", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
    out = [f.to_ndarray()[0] for f in resampler.resample(frame)]
    out += [f.to_ndarray()[0] for f in resampler.resample(None)]  # flush the filter's tail
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def normalize(samples: np.ndarray) -> np.ndarray:
    """wav2vec2-large's feature extractor (``do_normalize``): zero mean, unit variance."""
    return (samples - samples.mean()) / np.sqrt(samples.var() + NORM_EPS)


def to_video_rate(states: torch.Tensor) -> torch.Tensor:
    """[L, T, C] wav2vec2 states at 50 per second -> [L, int(T * 30 / 50), C] (official ``linear_interpolation``)."""
    out_len = int(states.shape[1] / float(STATES_PER_SECOND) * FEATURE_RATE)
    return F.interpolate(states.transpose(1, 2), size=out_len, mode="linear", align_corners=True).transpose(1, 2)


def clips_for(n_states: int, frames_per_clip: int, fps: int) -> int:
    """How many clips of ``frames_per_clip`` video frames the official loop makes for ``n_states`` 30 fps states."""
    return int(n_states / (frames_per_clip * FEATURE_RATE / fps)) + 1


def frame_buckets(states: torch.Tensor, frames_per_clip: int, fps: int = 16, clips: int | None = None) -> torch.Tensor:
    """[L, N, C] 30 fps states -> [L, C, clips * frames_per_clip], one state per video frame (official ``m = 0``);
    frames after the audio get zeros. ``clips`` defaults to all the audio allows."""
    layers, n, c = states.shape
    clips = clips or clips_for(n, frames_per_clip, fps)
    count = clips * frames_per_clip
    total = n + max(0, math.ceil(count / fps * FEATURE_RATE) - n)
    times = np.linspace(0, count / fps, count, endpoint=False)
    index = np.clip(np.round(times * FEATURE_RATE).astype(int), 0, total - 1)
    picked = states[:, torch.from_numpy(np.minimum(index, n - 1))]  # [L, count, C]
    picked[:, torch.from_numpy(index >= n)] = 0
    return picked.permute(0, 2, 1).contiguous()
