"""Video output nodes: Save Wan Video writes the decoded frames to an mp4 / webm file with the workflow embedded (unless
ComfyUI runs with --disable-metadata), like core ComfyUI, less any API key typed into the graph; Wan Create Video
hands frames and frame rate to core's VIDEO nodes."""
from __future__ import annotations

import torch

from ..wan.errors import InputError
from ..wan.video import FORMATS, check_fps, prefix_problem, save_video, workflow_metadata
from ..wan.video_audio import video_track
from . import host
from .secrets import without_secrets
from .validation import number_problem, verdict


class WanExpertsSaveVideo:
    DISPLAY_NAME = "Save Wan Video"
    DESCRIPTION = ("Encodes the frames to an mp4 (H.264) or webm (VP9) file in the output folder, with the workflow "
                   "stored in the file so dragging it into ComfyUI restores the graph (nothing is stored when ComfyUI "
                   "runs with --disable-metadata). Never overwrites: each run gets the next number.")
    CATEGORY = "Wan Experts/output"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The video frames (from Wan VAE Decode)."}),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": (
                    "Frames per second: 16 for Wan 2.1 and the 2.2 A14B models, 24 for Wan 2.2 TI2V-5B.")}),
                "filename_prefix": ("STRING", {"default": "video/Wan", "tooltip": (
                    "File name start, optionally with subfolders inside the output folder; a number and the "
                    "extension are appended (video/Wan -> output/video/Wan_00001_.mp4).")}),
                "format": (list(FORMATS), {"default": "mp4", "tooltip": (
                    "mp4 = H.264 (plays everywhere); webm = VP9 (smaller, for browsers).")}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 63, "step": 1, "tooltip": (
                    "Quality: lower is better and larger. H.264 uses 0..51 (19 is visually near lossless), "
                    "VP9 0..63 (about 31 is a good start).")}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": (
                    "Optional sound track (e.g. the speech of Wan Sound To Video): muxed from the first frame, AAC in "
                    "mp4 / Opus in webm, cut to the video's length (padded with silence when shorter).")}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None, fps=None):
        """ComfyUI calls this while it validates the graph, before anything runs: a bad prefix or fps fails at once
        instead of after sampling and decoding. ComfyUI then leaves these two inputs to this check alone (so fps
        is checked against its range here too); linked inputs arrive as None and are checked when the node runs."""
        return verdict(None if filename_prefix is None else prefix_problem(filename_prefix),
                       number_problem(cls, fps=fps))

    def save(self, images, fps=16.0, filename_prefix="video/Wan", format="mp4", crf=19, audio=None, prompt=None,
             extra_pnginfo=None):
        metadata = {} if host.metadata_disabled() else workflow_metadata(*without_secrets(prompt, extra_pnginfo))
        saved = save_video(images, host.output_dir(), filename_prefix, fps=fps, format=format, crf=crf,
                           metadata=metadata, audio=audio)
        preview = {"filename": saved.filename, "subfolder": saved.subfolder, "type": "output"}
        return {"ui": {"images": [preview], "animated": (True,)}, "result": ()}


class WanExpertsCreateVideo:
    DISPLAY_NAME = "Wan Create Video"
    DESCRIPTION = ("Packs the decoded frames and their frame rate into ComfyUI's VIDEO type (the object core Create "
                   "Video makes), for core Save Video, Preview Video and other nodes that take a VIDEO. Nothing is "
                   "encoded here.")
    CATEGORY = "Wan Experts/output"
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The frames and frame rate as a VIDEO, for core Save Video / Preview Video.",)
    FUNCTION = "create"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The video frames (from Wan VAE Decode)."}),
            "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": (
                "Frames per second: 16 for Wan 2.1 and the 2.2 A14B models, 24 for Wan 2.2 TI2V-5B.")}),
        }, "optional": {
            "audio": ("AUDIO", {"tooltip": "Optional sound track, carried in the VIDEO (core Save Video muxes it)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None):
        return verdict(number_problem(cls, fps=fps))

    def create(self, images, fps=16.0, audio=None):
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[-1] not in (3, 4) or not images.shape[0]:
            found = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise InputError(f"images must be frames [N, H, W, 3] with at least one frame; got {found}")
        check_fps(fps)
        if audio is not None:
            video_track(audio, images.shape[0], fps)  # refuse bad audio here, not in a later save
        return (host.make_video(images[..., :3], fps, audio),)  # core's VIDEO holds RGB frames


NODES = {"WanExpertsSaveVideo": WanExpertsSaveVideo, "WanExpertsCreateVideo": WanExpertsCreateVideo}
