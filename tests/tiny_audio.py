"""Tiny random wav2vec2 models (transformers) in the layouts users have, and test waveforms."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from oracles.randomize import randomize_

OFFICIAL_FOLDER = "wav2vec2-large-xlsr-53-english"


def tiny_wav2vec2(layers: int = 2, width: int = 64, seed: int = 0):
    """A ``Wav2Vec2ForCTC`` shaped like wav2vec2-large (layer-norm convs, stable layer norm), tiny sizes."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    cfg = Wav2Vec2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=width // 64,
                         intermediate_size=96, conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2),
                         conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=True, feat_extract_norm="layer",
                         do_stable_layer_norm=True, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         vocab_size=8)
    model = randomize_(Wav2Vec2ForCTC(cfg).eval(), std=0.2, seed=seed)
    with torch.no_grad():  # keep the weight-norm magnitude away from 0 and the features lively
        for name, p in model.named_parameters():
            if "layer_norm.weight" in name or "original0" in name:
                p.abs_().add_(0.5)
    return model


def save_official_folder(model, root: Path) -> Path:
    """The folder inside the official S2V checkpoint: config + weights + feature extractor + CTC tokenizer."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

    folder = root / OFFICIAL_FOLDER
    model.save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    vocab = folder / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7}))
    Wav2Vec2CTCTokenizer(str(vocab)).save_pretrained(folder)
    return folder


def save_comfy_file(model, path: Path) -> Path:
    """Comfy-Org style single file: the bare Wav2Vec2Model names, fp16, no config beside it."""
    sd = {k[len("wav2vec2."):]: v.half().contiguous() for k, v in model.state_dict().items()
          if k.startswith("wav2vec2.")}
    save_file(sd, str(path))
    return path


def sine_sweep(seconds: float, rate: int, channels: int = 1, f0: float = 110.0, f1: float = 3000.0) -> np.ndarray:
    """[channels, samples] float32 exactly representable as 16-bit PCM; channel k is delayed a little."""
    t = np.arange(int(seconds * rate)) / rate
    k = np.log(f1 / f0) / seconds
    chans = [0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * (t + 0.01 * c)) - 1) / k) for c in range(channels)]
    pcm = np.round(np.stack(chans) * 32767).astype(np.int16)
    return pcm.astype(np.float32) / 32768.0


def write_wav(samples: np.ndarray, rate: int, path: Path) -> Path:
    pcm = np.round(samples * 32768.0).clip(-32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.T.tobytes())
    return path


def comfy_audio(samples: np.ndarray, rate: int) -> dict:
    return {"waveform": torch.from_numpy(samples)[None], "sample_rate": rate}
