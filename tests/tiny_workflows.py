"""The example workflows made runnable on tiny random-weight models: model files written (by ``wan.runner.demo``) under the
file names a workflow uses, input images for its LoadImage nodes, and the graph shrunk to sizes the tiny models take.

Shared by the workflow tests (through tests/graph_runner.py) and scripts/comfy_host_check.py (through a real
ComfyUI server); needs no pytest. Only what the tiny models cannot take is changed: size, frame count and steps
(tiny and few), a refine's strength (so that one of the few steps runs), and step caches may fall back to other models' data (the tiny DiTs are no published variant)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wan.runner import demo
from wan.lora.demo import write_demo_lora

TINY = {"width": 64, "height": 32, "frames": 5, "steps": 3, "context_frames": 5, "context_overlap": 4,
        "overlap_frames": 1, "strength": 0.5,  # strength: video to video runs one of the 3 steps
        "length": 5}  # core Image From Batch: as many control-video frames as the video has
LONG_FRAMES = 13  # a video sampled in context windows: 4 latent frames in windows of 2
EXTEND = "WanExpertsExtendVideo"
FILE_INPUTS = {"model_name": "diffusion_models", "high_noise_model": "diffusion_models",
               "low_noise_model": "diffusion_models", "text_encoder_name": "text_encoders", "vae_name": "vae",
               "clip_name": "clip_vision", "lora_name": "loras", "high_noise_lora": "loras",
               "low_noise_lora": "loras", "audio_encoder_name": "audio_encoders"}
S2V = "WanExpertsSoundToVideo"
TINY_S2V = {"width": 64, "height": 64, "frames_per_clip": 8, "clips": 1, "steps": 2}  # sides: multiples of 64
ANIMATE = "WanExpertsAnimate"
TINY_ANIMATE = {"clip_frames": 5, "steps": 2}  # 7 driving frames: two clips of 5 overlapping by 1
ANIMATE_FRAMES, ANIMATE_SIZE, FACE_SIZE = 7, (32, 64), 16  # driving videos: frames, (height, width); face crops


def variant_of(dit_name: str) -> str:
    """The variant a Comfy-Org DiT file name stands for."""
    name = dit_name.lower()
    if "animate" in name:
        return "wan22_animate_14b"
    if "s2v" in name:
        return "wan22_s2v_14b"
    if "vace" in name:
        return "wan22_vace_a14b" if "wan2.2" in name else "wan21_vace_1.3b" if "1.3b" in name else "wan21_vace_14b"
    if "ti2v" in name:
        return "wan22_ti2v_5b"
    if "flf2v" in name:
        return "wan21_flf2v_14b"
    if "wan2.2" in name:
        return "wan22_i2v_a14b" if "i2v" in name else "wan22_t2v_a14b"
    if "i2v" in name:
        return "wan21_i2v_14b"
    return "wan21_t2v_1.3b" if "1.3b" in name else "wan21_t2v_14b"


class TinyModels:
    """Tiny model files per variant, written once into ``cache_dir`` and linked under each workflow's names."""

    def __init__(self, cache_dir):
        self.cache_dir = Path(cache_dir)
        self.written: dict = {}

    def __call__(self, variant: str, experts: int, with_clip: bool) -> demo.DemoModels:
        key = (variant, experts, with_clip)
        if key not in self.written:
            names = {"diffusion_models": [f"dit{i}.safetensors" for i in range(experts)],
                     "text_encoders": "t5.safetensors", "vae": "vae.safetensors",
                     "clip_vision": "clip.safetensors" if with_clip else None,
                     "audio_encoders": "wav2vec2.safetensors" if variant == "wan22_s2v_14b" else None}
            self.written[key] = demo.write_comfy_files(self.cache_dir / "_".join(map(str, key)), variant, names)
        return self.written[key]


def write_models(graph: dict, models_dir: Path, tiny_models) -> None:
    """Hard links to tiny models (and random LoRAs that fit them) under the file names ``graph`` picks."""
    names: dict = {}
    for node in graph.values():
        for key, kind in FILE_INPUTS.items():
            if key in node["inputs"]:
                names.setdefault(kind, []).append(node["inputs"][key])
    dits = names["diffusion_models"]
    files = tiny_models(variant_of(dits[0]), len(dits), "clip_vision" in names)
    sources = {"diffusion_models": files.dits, "text_encoders": [files.text_encoder], "vae": [files.vae],
               "clip_vision": [files.clip], "audio_encoders": [files.audio_encoder]}
    for i, name in enumerate(names.pop("loras", [])):  # random LoRAs that fit the tiny DiT
        write_demo_lora(files.dits[0], models_dir / "loras" / name, seed=i)
    for kind, wanted in names.items():
        for source, name in zip(sources[kind], wanted):
            (models_dir / kind).mkdir(parents=True, exist_ok=True)
            if os.path.lexists(models_dir / kind / name):
                os.remove(models_dir / kind / name)
            os.link(source, models_dir / kind / name)


POSE_FRAMES = 12  # more than one tiny clip (TINY_S2V), so the pose video is cut, not padded


def write_images(graph: dict, input_dir: Path) -> None:
    """A random 80x48 picture for every LoadImage node of ``graph``, a 0.5 s tone for every LoadAudio node, and for
    every LoadVideo node: a 16 fps video of moving stick figures (a pose video) in a speech-to-video graph, short
    random driving videos in an Animate graph (square face crops when the file name says face), a random 9-frame
    80x48 video in any other."""
    import wave

    import torch

    from wan.video import write_video

    from PIL import Image

    input_dir.mkdir(exist_ok=True)
    for i, node in enumerate(n for n in graph.values() if n["class_type"] == "LoadImage"):
        pixels = np.random.default_rng(i).integers(0, 255, (48, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(input_dir / node["inputs"]["image"])
    s2v = any(n["class_type"] == S2V for n in graph.values())
    animate = any(n["class_type"] == "WanExpertsAnimate" for n in graph.values())
    for i, node in enumerate(n for n in graph.values() if n["class_type"] == "LoadVideo" and not (s2v or animate)):
        frames = np.random.default_rng(100 + i).random((9, 48, 80, 3), dtype=np.float32)
        write_video(torch.from_numpy(frames), input_dir / node["inputs"]["file"])
    for node in (n for n in graph.values() if n["class_type"] == "LoadAudio"):
        t = np.arange(8000) / 16000
        with wave.open(str(input_dir / node["inputs"]["audio"]), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes((np.sin(2 * np.pi * 330 * t) * 12000).astype(np.int16).tobytes())
    for node in (n for n in graph.values() if n["class_type"] == "LoadVideo" and s2v):
        write_pose_video(input_dir / node["inputs"]["file"])

    for i, node in enumerate(n for n in graph.values() if n["class_type"] == "LoadVideo" and animate):
        name = node["inputs"]["file"]
        size = (FACE_SIZE, FACE_SIZE) if "face" in name else ANIMATE_SIZE
        frames = torch.rand(ANIMATE_FRAMES, *size, 3, generator=torch.Generator().manual_seed(i))
        write_video(frames, input_dir / name, fps=30)


def write_pose_video(path: Path, frames: int = POSE_FRAMES) -> None:
    """Coloured limbs on black, swaying from frame to frame, as 16 fps mp4 (96x64: sides a codec takes)."""
    import torch

    from wan.video import write_video

    video = torch.zeros(frames, 64, 96, 3)
    for i in range(frames):
        x = 40 + 2 * i
        video[i, 10:50, x:x + 3, 0] = 1.0  # trunk
        video[i, 20:23, x - 15:x + 18, 1] = 1.0  # arms
        video[i, 50:60, x - 6 - i // 2:x - 3 - i // 2, 2] = 1.0  # legs
        video[i, 50:60, x + 6 + i // 2:x + 9 + i // 2, 2] = 1.0
    write_video(video, path, fps=16.0)


def shrink(graph: dict) -> dict:
    """``graph`` with tiny sizes, few steps and step-cache fallbacks allowed (changed in place and returned)."""
    long = any(node["class_type"] == "WanExpertsContextWindows" for node in graph.values())
    for node in graph.values():
        inputs = node["inputs"]
        for key, value in TINY.items():
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = LONG_FRAMES if key == "frames" and long and node["class_type"] != EXTEND else value
        if "allow_fallback" in inputs:
            inputs["allow_fallback"] = True
        if node["class_type"] == S2V:
            inputs.update(TINY_S2V)
        if node["class_type"] == ANIMATE:
            inputs.update(TINY_ANIMATE)
    return graph


def expected_frames(graph: dict) -> int:
    """The sampled video's frames, plus the new frames of each extension (segment minus the frames it shares)."""
    if any(n["class_type"] == ANIMATE for n in graph.values()):
        return ANIMATE_FRAMES  # as many as the driving videos
    s2v = [n["inputs"] for n in graph.values() if n["class_type"] == S2V]
    if s2v:  # one clip; the first clip loses 3 frames unless it starts from the reference image
        return s2v[0]["clips"] * s2v[0]["frames_per_clip"] - (0 if s2v[0]["start_from_ref"] else 3)
    nodes = [n for n in graph.values() if "frames" in n["inputs"]]
    first = next(n["inputs"]["frames"] for n in nodes if n["class_type"] != EXTEND)
    return first + sum(n["inputs"]["frames"] - n["inputs"]["overlap_frames"] for n in nodes if n["class_type"] == EXTEND)


def expected_size(graph: dict) -> tuple[int, int]:
    """(height, width) of the saved video: the tiny size, through every factor upscale on the way (in graph order,
    which is the chain's order in the example workflows)."""
    from wan.upscale import target_size

    width, height = TINY["width"], TINY["height"]
    if any(n["class_type"] == S2V for n in graph.values()):
        return TINY_S2V["height"], TINY_S2V["width"]
    if any(n["class_type"] == ANIMATE for n in graph.values()):
        return ANIMATE_SIZE
    for node in graph.values():
        inputs = node["inputs"]
        if node["class_type"] == "WanExpertsUpscaleVideo" and inputs["target"] == "factor":
            width, height = target_size(width, height, factor=inputs["factor"], multiple=inputs["multiple"])
    return height, width
