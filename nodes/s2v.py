"""Nodes for speech-to-video (Wan 2.2 S2V-14B): the wav2vec2 audio encoder and its encoding of ComfyUI AUDIO."""
from __future__ import annotations

from ..wan.encoders.audio import load_audio_encoder
from . import host
from .encoders import CATEGORY, LOADER_CATEGORY, _place, _placement_inputs


class WanExpertsLoadAudioEncoder:
    DISPLAY_NAME = "Load Wan Audio Encoder"
    DESCRIPTION = ("Loads the wav2vec2 audio encoder of Wan 2.2 S2V-14B from models/audio_encoders: the Comfy-Org "
                   "wav2vec2_large_english_fp16.safetensors, or the official wav2vec2-large-xlsr-53-english folder "
                   "(inside the S2V checkpoint).")
    CATEGORY = LOADER_CATEGORY
    RETURN_TYPES = ("WAN_AUDIO_ENCODER",)
    RETURN_NAMES = ("audio_encoder",)
    OUTPUT_TOOLTIPS = ("The audio encoder, for Wan Audio Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio_encoder_name": (host.list_models("audio_encoders"), {
                "tooltip": "wav2vec2 file in models/audio_encoders (wav2vec2_large_english_fp16.safetensors), or "
                           "the model.safetensors of the official folder copied there."}),
            **_placement_inputs("Where the encoder runs; 'cpu' saves GPU memory at the cost of speed."),
        }}

    def load(self, audio_encoder_name, dtype="default", device="gpu", keep_loaded=False):
        path = host.model_path("audio_encoders", audio_encoder_name)
        encoder = load_audio_encoder(path, dtype=dtype, device=host.offload_device())
        return (_place(encoder, device, keep_loaded),)


class WanExpertsAudioEncode:
    DISPLAY_NAME = "Wan Audio Encode"
    DESCRIPTION = ("Encodes a speech or song track as the official S2V code: mixed to mono, resampled to 16 kHz, all "
                   "wav2vec2 hidden states, interpolated to 30 per second. Takes core AUDIO (Load Audio, recordings); "
                   "the first track of a batch is used.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_AUDIO_EMBEDS",)
    RETURN_NAMES = ("audio_embeds",)
    OUTPUT_TOOLTIPS = ("The track's audio features, for Wan Sound To Video.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio_encoder": ("WAN_AUDIO_ENCODER", {"tooltip": "From Load Wan Audio Encoder."}),
            "audio": ("AUDIO", {"tooltip": "The speech or song that drives the video (any rate, mono or stereo)."}),
        }}

    def encode(self, audio_encoder, audio):
        host.check_interrupted()
        return (audio_encoder.encode(audio),)


NODES = {
    "WanExpertsLoadAudioEncoder": WanExpertsLoadAudioEncoder,
    "WanExpertsAudioEncode": WanExpertsAudioEncode,
}
