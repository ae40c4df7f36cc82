"""Video files with sound (Save Wan Video / Wan Create Video ``audio``): read back with PyAV (an independent decoder):
one video and one audio stream, the audio as long as the video within one audio frame, and the decoded samples
equal to the input within codec tolerance (SNR, printed; AAC in mp4, Opus in webm)."""
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tiny_audio import sine_sweep
from wan.errors import InputError
from wan.video import save_video, write_video

FPS, FRAMES = 16.0, 24  # 1.5 s of video


def _frames():
    g = torch.Generator().manual_seed(0)
    return torch.rand(FRAMES, 32, 48, 3, generator=g)


def _read(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video, c.streams.audio
        assert len(v) == 1 and len(a) == 1
        audio = a[0]
        rate, frame_size = audio.rate, audio.codec_context.frame_size or 1024
        video_s = float(v[0].duration * v[0].time_base) if v[0].duration else FRAMES / FPS
        chunks = [f.to_ndarray() for f in c.decode(audio)]
    samples = np.concatenate([ch if ch.ndim == 2 and ch.shape[0] <= 2 else ch.reshape(-1, 1).T for ch in chunks],
                             axis=1)
    return samples, rate, frame_size, video_s


def _snr(ref, out):
    n = min(ref.shape[-1], out.shape[-1])
    best = -np.inf
    for lag in range(0, 400):  # an encoder delay left in by the container, if any
        m = n - lag
        err = out[..., lag:lag + m] - ref[..., :m]
        best = max(best, 10 * np.log10(np.sum(ref[..., 200:m - 200] ** 2) / np.sum(err[..., 200:m - 200] ** 2)))
    return best


@pytest.mark.parametrize("fmt,rate,channels,snr_min", [("mp4", 44100, 2, 20.0), ("mp4", 16000, 1, 20.0),
                                                       ("webm", 48000, 2, 20.0), ("webm", 22050, 1, 15.0)])
def test_sound_track_round_trip(tmp_path, fmt, rate, channels, snr_min):
    wave = sine_sweep(2.0, rate, channels, f0=200.0, f1=2000.0)  # longer than the video: trimmed
    audio = {"waveform": torch.from_numpy(wave)[None], "sample_rate": rate}
    path = write_video(_frames(), tmp_path / f"talk.{fmt}", fps=FPS, audio=audio)
    samples, out_rate, frame_size, video_s = _read(path)
    audio_s = samples.shape[-1] / out_rate
    assert abs(audio_s - FRAMES / FPS) <= frame_size / out_rate, (audio_s, FRAMES / FPS)
    if out_rate != rate:  # Opus always runs at 48 kHz: compare at that rate
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo" if channels == 2 else "mono")
        frame.sample_rate = rate
        res = av.AudioResampler(format="fltp", rate=out_rate)
        wave = np.concatenate([f.to_ndarray() for f in [*res.resample(frame), *res.resample(None)]], axis=1)
    n = round(FRAMES / FPS * out_rate)
    snr = _snr(wave[:, :n], samples[:, :n])
    print(f"{fmt} {rate} Hz x{channels}: {out_rate} Hz, audio {audio_s:.4f} s vs video {FRAMES / FPS:.4f} s, "
          f"SNR {snr:.1f} dB")
    assert snr >= snr_min


def test_short_audio_is_padded_and_bad_audio_refused(tmp_path):
    audio = {"waveform": torch.from_numpy(sine_sweep(0.5, 16000))[None], "sample_rate": 16000}
    saved = save_video(_frames(), tmp_path, "video/Wan", fps=FPS, audio=audio)
    samples, out_rate, frame_size, _ = _read(saved.path)
    assert abs(samples.shape[-1] / out_rate - FRAMES / FPS) <= frame_size / out_rate
    with pytest.raises(InputError, match="sample rate"):
        save_video(_frames(), tmp_path, "video/Bad", fps=FPS, audio={"waveform": torch.zeros(1, 1, 10),
                                                                     "sample_rate": 0})
    assert not list((tmp_path / "video").glob("Bad*"))  # nothing half-written


def test_nodes_take_audio(pack, models_dir):
    """Save Wan Video writes the track; Wan Create Video carries it in the VIDEO (its save_to muxes it)."""
    import importlib

    video = importlib.import_module(pack.__name__ + ".nodes.video")
    audio = {"waveform": torch.from_numpy(sine_sweep(1.0, 24000, 2))[None], "sample_rate": 24000}
    out = video.WanExpertsSaveVideo().save(_frames(), fps=FPS, filename_prefix="video/talk", audio=audio)
    saved = models_dir.parent / "output" / "video" / out["ui"]["images"][0]["filename"]
    assert _read(saved)[0].shape[0] == 2
    (clip,) = video.WanExpertsCreateVideo().create(_frames(), fps=FPS, audio=audio)
    assert clip.get_components().audio is audio
    clip.save_to(models_dir.parent / "core.mp4")
    assert _read(models_dir.parent / "core.mp4")[1] == 24000
