"""S2V audio features vs the official ``AudioEncoder`` (PyPI ``wan22``, ``wan/modules/s2v/audio_encoder.py``:
librosa load, ``Wav2Vec2Processor``, ``Wav2Vec2ForCTC`` all hidden states, 30 fps interpolation,
``get_audio_embed_bucket_fps``) on a tiny random wav2vec2, float32.

Exact parity (<= 1e-4 relative, ``tiny_dit.assert_close``) on a 16 kHz sine sweep, where neither side resamples:
the states, the per-frame buckets and the clip count, for the official folder and a Comfy-Org-style fp16 single
file (compared with the official code on the same fp16-rounded weights). At 44.1 / 48 / 8 kHz our PyAV resampler
and librosa's (soxr) differ: measured and bounded below (SNR of the 16 kHz waveforms)."""
import numpy as np
import pytest
import torch

import wan
from oracles import official
from tiny_audio import (comfy_audio, save_comfy_file, save_official_folder, sine_sweep, tiny_wav2vec2, write_wav)
from tiny_dit import assert_close
from wan.budget.check import BudgetError
from wan.encoders.audio import load_audio_encoder
from wan.encoders.audio_features import clips_for, frame_buckets, to_mono_16k
from wan.errors import CheckpointError, InputError

import librosa  # test-only dependency (requirements-test.txt): the official loader


@pytest.fixture(scope="module")
def model():
    return tiny_wav2vec2()


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory):
    return save_official_folder(model, tmp_path_factory.mktemp("s2v_ckpt"))


def _official(folder, wav, frames_per_clip=80):
    """The official pipeline's ``encode_audio``: [1, L, C, clips * frames] buckets and the clip count."""
    enc = official.load("modules.s2v.audio_encoder").AudioEncoder(device="cpu", model_id=str(folder))
    z = enc.extract_audio_feat(str(wav), return_all_layers=True)
    buckets, clips = enc.get_audio_embed_bucket_fps(z, fps=16, batch_frames=frames_per_clip, m=0)
    return z, buckets.unsqueeze(0).permute(0, 2, 3, 1), clips


@pytest.mark.parametrize("seconds,frames_per_clip", [(2.3, 16), (7.9, 80)])
def test_features_buckets_and_clips_match_official(folder, tmp_path, seconds, frames_per_clip):
    samples = sine_sweep(seconds, 16000)
    z_ref, buckets_ref, clips_ref = _official(folder, write_wav(samples, 16000, tmp_path / "s.wav"), frames_per_clip)
    embeds = load_audio_encoder(folder.parent).encode(comfy_audio(samples, 16000))  # the S2V folder also works
    assert_close(embeds.states, z_ref)
    assert clips_for(embeds.frames, frames_per_clip, 16) == clips_ref
    assert_close(frame_buckets(embeds.states, frames_per_clip, 16)[None], buckets_ref)


def test_comfy_single_file_matches_official(model, tmp_path):
    """fp16 single file in bare transformers names: same states as the official code on the fp16-rounded weights."""
    path = save_comfy_file(model, tmp_path / "wav2vec2_large_english_fp16.safetensors")
    rounded = tiny_wav2vec2()
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    ref_folder = save_official_folder(rounded, tmp_path / "ref")
    samples = sine_sweep(1.7, 16000)
    z_ref, _, _ = _official(ref_folder, write_wav(samples, 16000, tmp_path / "s.wav"))
    enc = load_audio_encoder(path, dtype="float32")
    assert enc.normalize and enc.width == 64
    assert_close(enc.encode(comfy_audio(samples, 16000)).states, z_ref)


@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 1), (8000, 1)])
def test_resampler_difference_from_librosa(tmp_path, rate, channels):
    """PyAV (libswresample) vs librosa.load (soxr_hq), mono 16 kHz: SNR >= 40 dB away from the edges (measured:
    see the README). Stereo is averaged to mono by both."""
    samples = sine_sweep(2.0, rate, channels, f1=3500.0)
    ref, _ = librosa.load(str(write_wav(samples, rate, tmp_path / "s.wav")), sr=16000)
    ours = to_mono_16k(torch.from_numpy(samples), rate)
    assert abs(len(ours) - len(ref)) <= 1
    n = min(len(ours), len(ref))
    inner = slice(400, n - 400)  # filter edges (25 ms)
    err = ours[inner] - ref[inner]
    snr = 10 * np.log10(np.sum(ref[inner] ** 2) / np.sum(err ** 2))
    print(f"resampler {rate} Hz x{channels}: SNR {snr:.1f} dB, max |diff| {np.abs(err).max():.2e}")
    assert snr >= 40.0


def test_bad_audio_is_refused_before_encoding(folder):
    enc = load_audio_encoder(folder)
    silent = {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}
    with pytest.raises(InputError, match="silent"):
        enc.encode(silent)
    with pytest.raises(InputError, match="samples > 0"):
        enc.encode({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})
    with pytest.raises(InputError, match="at least 40 ms"):
        enc.encode({"waveform": torch.ones(1, 1, 300), "sample_rate": 16000})
    with pytest.raises(InputError, match="sample rate"):
        enc.encode({"waveform": torch.ones(1, 1, 3000), "sample_rate": 16000.5})
    ten_hours = {"waveform": torch.zeros(1, 1, 1).expand(1, 1, 16000 * 36000), "sample_rate": 16000}
    with pytest.raises(BudgetError, match="hours"):  # refused from its length: nothing is resampled or encoded
        enc.encode(ten_hours)
    with pytest.raises(InputError, match="AUDIO"):
        enc.encode(torch.zeros(1, 1, 16000))


def test_wrong_file_kind(tmp_path):
    from safetensors.torch import save_file

    save_file({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match="wav2vec2"):
        load_audio_encoder(tmp_path / "dit.safetensors")


def test_nodes_load_and_encode(model, models_dir, pack):
    """Load Wan Audio Encoder lists models/audio_encoders; Wan Audio Encode takes core AUDIO (stereo 48 kHz here)."""
    import importlib

    s2v = importlib.import_module(pack.__name__ + ".nodes.s2v")
    WanExpertsAudioEncode, WanExpertsLoadAudioEncoder = s2v.WanExpertsAudioEncode, s2v.WanExpertsLoadAudioEncoder
    (models_dir / "audio_encoders").mkdir()
    save_comfy_file(model, models_dir / "audio_encoders" / "wav2vec2_large_english_fp16.safetensors")
    names = WanExpertsLoadAudioEncoder.INPUT_TYPES()["required"]["audio_encoder_name"][0]
    assert names == ["wav2vec2_large_english_fp16.safetensors"]
    (encoder,) = WanExpertsLoadAudioEncoder().load(names[0], device="cpu")
    (embeds,) = WanExpertsAudioEncode().encode(encoder, comfy_audio(sine_sweep(1.0, 48000, 2), 48000))
    assert embeds.states.shape == (3, 29, 64) and abs(embeds.seconds - 1.0) < 1e-6  # 49 wav2vec2 states / 50 * 30
