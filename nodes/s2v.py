"""Nodes for speech-to-video (Wan 2.2 S2V-14B): the wav2vec2 audio encoder, its encoding of ComfyUI AUDIO, and the
clip-by-clip generation (Wan Sound To Video)."""
from __future__ import annotations

import logging

import torch

from ..wan.errors import InputError
from ..wan.experts import as_expert_set
from ..wan.encoders.audio import load_audio_encoder
from ..wan.sampling import SOLVERS, SamplerSettings
from ..wan.sampling.defaults import resolve_auto
from ..wan.sampling.s2v import fit_frames, generate_s2v, plan_clips
from . import host
from .choices import clip_sampling_widgets
from .encoders import CATEGORY, LOADER_CATEGORY, place_encoder, placement_inputs
from .validation import number_problem, verdict
from .vae import on_compute_device

log = logging.getLogger("wan_experts")
SAMPLING_CATEGORY = "Wan Experts/sampling"


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
            **placement_inputs("Where the encoder runs; 'cpu' saves GPU memory at the cost of speed."),
        }}

    def load(self, audio_encoder_name, dtype="default", device="gpu", keep_loaded=False):
        path = host.model_path("audio_encoders", audio_encoder_name)
        encoder = load_audio_encoder(path, dtype=dtype, device=host.offload_device())
        return (place_encoder(encoder, device, keep_loaded),)


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


class WanExpertsSoundToVideo:
    DISPLAY_NAME = "Wan Sound To Video"
    DESCRIPTION = ("Speech-to-video with Wan 2.2 S2V-14B, as the official code: a reference portrait and a speech or "
                   "song track make a talking or singing video, clip by clip (the last 73 frames of each clip steer "
                   "the next), optionally following a pose video. Samples and decodes each clip (the VAE is needed "
                   "here); the frames come out as IMAGE at 16 fps. 0 for steps, cfg or shift = the official S2V "
                   "defaults (40 steps, guidance 4.5, shift 3).")
    CATEGORY = SAMPLING_CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video frames (16 fps); connect the audio to Save Wan Video / Wan Create Video for sound.",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("WAN_MODEL", {"tooltip": "The Wan 2.2 S2V-14B DiT (wan2.2_s2v_14B_bf16.safetensors)."}),
            "vae": ("WAN_VAE", {"tooltip": "The Wan 2.1 VAE."}),
            "text": ("WAN_TEXT", {"tooltip": "Prompt embeddings from Wan Text Encode; an empty negative prompt takes "
                                             "the official S2V one when encoded with this model's default."}),
            "audio_embeds": ("WAN_AUDIO_EMBEDS", {"tooltip": "From Wan Audio Encode."}),
            "ref_image": ("IMAGE", {"tooltip": "The reference portrait (first image of the batch); scaled to cover "
                                               "the video size and centre cropped."}),
            "width": ("INT", {"default": 832, "min": 64, "max": 4096, "step": 64, "tooltip": (
                "Video width, a multiple of 64.")}),
            "height": ("INT", {"default": 448, "min": 64, "max": 4096, "step": 64, "tooltip": (
                "Video height, a multiple of 64.")}),
            "frames_per_clip": ("INT", {"default": 80, "min": 4, "max": 1024, "step": 4, "tooltip": (
                "Frames per clip (official infer_frames 80; a multiple of 4). The first clip has 3 fewer.")}),
            "clips": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": (
                "How many clips; 0 = as many as the audio lasts (more than that are cut to it).")}),
            **clip_sampling_widgets(
                SOLVERS, seed="Noise seed; clip k uses seed + k (official).",
                steps="Steps per clip; 0 = 40 (official).",
                cfg="Guidance scale (the negative pass has the prompt's negative and silent audio); 0 = 4.5 "
                    "(official).",
                shift="Noise schedule shift; 0 = 3 (official)."),
            "start_from_ref": ("BOOLEAN", {"default": False, "tooltip": (
                "Start the video from the reference image (official --start_from_ref: it fills the last motion "
                "frames, and the first clip keeps all its frames).")}),
        }, "optional": {
            "pose_video": ("IMAGE", {"tooltip": "Optional pose frames (16 fps) the motion follows; resized to cover "
                                                "the video size; blank after they end."}),
            "previous_frames": ("IMAGE", {"tooltip": "Optional frames of a video to continue (its last 73 frames "
                                                     "steer the first clip); the same size as the video."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, frames_per_clip=None, clips=None, cfg=None, shift=None):
        problem = number_problem(cls, width=width, height=height, frames_per_clip=frames_per_clip, clips=clips,
                                 cfg=cfg, shift=shift)
        steps = (("width", width, 64), ("height", height, 64), ("frames_per_clip", frames_per_clip, 4))
        for name, value, step in steps:
            if problem is None and isinstance(value, int) and value % step:
                problem = f"{name} must be a multiple of {step}; got {value}"
        return verdict(problem)

    def run(self, model, vae, text, audio_embeds, ref_image, width, height, frames_per_clip=80, clips=0, seed=0,
            steps=0, cfg=0.0, shift=0.0, solver="unipc", start_from_ref=False, pose_video=None, previous_frames=None):
        experts = as_expert_set(model)
        if experts.is_moe:
            raise InputError("Wan Sound To Video takes the single S2V-14B model, not an expert pair")
        auto = resolve_auto(experts, steps, shift, cfg, cfg)
        settings = SamplerSettings(steps=auto.steps, shift=auto.shift, solver=solver, cfg_high=auto.cfg_high,
                                   cfg_low=auto.cfg_high)
        ref = fit_frames(signed_frames(ref_image, "ref_image")[:1], height, width)[0]
        pose = None if pose_video is None else signed_frames(pose_video, "pose_video")
        previous = None if previous_frames is None else signed_frames(previous_frames, "previous_frames")
        n_clips = plan_clips(audio_embeds, frames_per_clip, clips)
        log.info("Wan Sound To Video: %d clips of %d frames, %s", n_clips, frames_per_clip, auto.describe())
        progress = host.Progress(n_clips * settings.steps)
        host.check_interrupted()

        def run():
            return generate_s2v(experts, vae, text, ref, audio_embeds, settings, frames_per_clip=frames_per_clip,
                                clips=n_clips, seed=seed, pose=pose, previous=previous, start_from_ref=start_from_ref,
                                device=host.compute_device(), offload_device=host.offload_device(),
                                callback=lambda clip: progress.update(1), interrupt=host.check_interrupted)

        video = on_compute_device(vae, run)
        host.free_memory()
        return (((video.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1),)


def signed_frames(image, name: str) -> torch.Tensor:
    """ComfyUI IMAGE [N, H, W, C] in 0..1 -> [N, 3, H, W] in [-1, 1]."""
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[-1] < 3 or image.shape[0] == 0:
        raise InputError(f"{name} must be an IMAGE [N, H, W, 3]; got "
                         f"{tuple(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    return image[..., :3].permute(0, 3, 1, 2).float() * 2.0 - 1.0


NODES = {
    "WanExpertsLoadAudioEncoder": WanExpertsLoadAudioEncoder,
    "WanExpertsAudioEncode": WanExpertsAudioEncode,
    "WanExpertsSoundToVideo": WanExpertsSoundToVideo,
}
