"""A sound track for a video file: ComfyUI ``AUDIO`` aligned to the frames (starting with frame 0), trimmed to the
video's length (or padded with silence when shorter), and muxed by PyAV as AAC in mp4 or Opus in webm."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .errors import InputError

CODECS = {"mp4": ("aac", None), "webm": ("libopus", 48000)}  # (encoder, required rate or None: keep the input's)
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
BITRATE = 192_000


@dataclass(frozen=True)
class Track:
    samples: np.ndarray  # float32 [channels (1 or 2), samples]
    rate: int


def video_track(audio, frames: int, fps: float) -> Track:
    """The first track of ``audio`` ({"waveform": [B, C, S], "sample_rate": int}) cut or padded to
    ``frames / fps`` seconds; more than two channels keep the first two."""
    if not isinstance(audio, dict) or not torch.is_tensor(audio.get("waveform")):
        raise InputError(f"audio must be ComfyUI AUDIO ({{'waveform': [B, C, S], 'sample_rate': int}}); got "
                         f"{type(audio).__name__}")
    wave, rate = audio["waveform"], audio.get("sample_rate")
    if wave.dim() == 3:
        wave = wave[0]
    if wave.dim() != 2 or 0 in wave.shape:
        raise InputError(f"the audio waveform must be [B, channels, samples] with sound in it; got "
                         f"{tuple(audio['waveform'].shape)}")
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1000 <= rate <= 384000:
        raise InputError(f"the audio sample rate must be a whole number of Hz from 1000 to 384000; got {rate!r}")
    if not torch.isfinite(wave).all():
        raise InputError("the audio waveform holds NaN or infinite samples; check the node that made it")
    samples = wave[:2].detach().float().cpu().numpy()
    length = round(frames / fps * rate)
    if samples.shape[1] < length:
        samples = np.pad(samples, ((0, 0), (0, length - samples.shape[1])))
    return Track(np.ascontiguousarray(samples[:, :length].clip(-1, 1), dtype=np.float32), rate)


def add_audio_stream(container, track: Track, container_format: str):
    """An audio stream in ``container`` for ``track`` (before the first packet is muxed)."""
    codec, rate = CODECS[container_format]
    rate = rate or (track.rate if track.rate in AAC_RATES else 48000)
    stream = container.add_stream(codec, rate=rate)
    stream.layout = "stereo" if track.samples.shape[0] == 2 else "mono"
    stream.bit_rate = BITRATE
    return stream


def mux_audio(container, stream, track: Track) -> None:
    """Encode the whole track into ``stream`` (resampled to the encoder's format and rate) and mux it."""
    import av

    layout = "stereo" if track.samples.shape[0] == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(track.samples, format="fltp", layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = track.rate, 0, Fraction(1, track.rate)
    fifo = av.AudioFifo()
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=stream.rate)
    for out in [*resampler.resample(frame), *resampler.resample(None)]:
        fifo.write(out)
    size = stream.codec_context.frame_size or 1024
    while fifo.samples:
        chunk = fifo.read(min(size, fifo.samples))
        container.mux(stream.encode(chunk))
    container.mux(stream.encode(None))
