"""``--task s2v-14B``: speech-to-video from the command line, with the official flags (``--image --audio
--pose_video --num_clip --infer_frames --start_from_ref``) and the official size rule (the largest size with sides
that are multiples of 64 within the ``--size`` area, from the image's aspect ratio).

The official ``--enable_tts`` (CosyVoice text-to-speech) is not shipped: it is refused with a message. Under
torchrun the official multi-GPU flags apply (``--ulysses_size``, ``--dit_fsdp``, ``--t5_fsdp``); ``--cfg_parallel``
is refused."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError

log = logging.getLogger("wan_experts")

AUDIO_FOLDER = "wav2vec2-large-xlsr-53-english"
TTS_FLAGS = ("enable_tts", "tts_prompt_audio", "tts_prompt_text", "tts_text")


@dataclass
class S2VOptions:
    audio: Path
    pose_video: Path | None
    num_clip: int  # 0: as many as the audio lasts
    infer_frames: int
    start_from_ref: bool
    max_area: int


def add_s2v_flags(p) -> None:
    g = p.add_argument_group("speech-to-video (--task s2v-14B)")
    g.add_argument("--audio", default=None, help="speech or song file that drives the video (any format PyAV reads)")
    g.add_argument("--pose_video", default=None, help="optional pose video the motion follows")
    g.add_argument("--num_clip", type=int, default=None, help="clips to make (default: as many as the audio lasts)")
    g.add_argument("--infer_frames", type=int, default=80, help="frames per clip, a multiple of 4 (official 80)")
    g.add_argument("--start_from_ref", action="store_true", help="start the video from the reference image")
    g.add_argument("--enable_tts", action="store_true", help="not supported (the official TTS needs CosyVoice)")
    g.add_argument("--tts_prompt_audio", default=None, help="not supported (--enable_tts)")
    g.add_argument("--tts_prompt_text", default=None, help="not supported (--enable_tts)")
    g.add_argument("--tts_text", default=None, help="not supported (--enable_tts)")


def s2v_options(args, width: int, height: int) -> S2VOptions:
    """Check the speech-to-video flags before anything loads."""
    if any(getattr(args, f, None) for f in TTS_FLAGS):
        raise InputError("--enable_tts and the --tts_* flags are not supported: the official text-to-speech needs "
                         "CosyVoice, which is not shipped. Make the speech with a TTS tool of your choice and pass "
                         "it with --audio")
    if args.infer_frames < 4 or args.infer_frames % 4:
        raise InputError(f"--infer_frames {args.infer_frames} must be a positive multiple of 4 (official 80)")
    if args.num_clip is not None and args.num_clip < 1:
        raise InputError(f"--num_clip {args.num_clip} must be at least 1 (leave it out: as many as the audio lasts)")
    if args.frame_num is not None:
        raise InputError("--frame_num does not apply to s2v-14B: use --infer_frames (frames per clip) and --num_clip")
    if getattr(args, "cfg_parallel", False):
        raise InputError("--cfg_parallel does not apply to s2v-14B (its clip loop runs both guidance branches in "
                         "each process): split the work with --ulysses_size N (and --dit_fsdp, --t5_fsdp) instead")
    if args.image is None and not args.demo:
        raise InputError("--task s2v-14B needs the reference portrait: pass --image path/to/image.png")
    audio = None if args.audio is None else Path(args.audio)
    if audio is None and not args.demo:
        raise InputError("--task s2v-14B needs the speech: pass --audio path/to/speech.wav")
    for flag, path in (("--audio", audio), ("--pose_video", args.pose_video)):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{flag} '{path}' is not a file")
    return S2VOptions(audio, None if args.pose_video is None else Path(args.pose_video), args.num_clip or 0,
                      args.infer_frames, args.start_from_ref, width * height)


def size_within_area(height: int, width: int, area: int, multiple: int = 64) -> tuple[int, int]:
    """(height, width) of the official rule (``get_size_less_than_area``): scale the image down by the largest
    factor (100 trials from the full-area scale) whose size, padded up to multiples of 64, fits ``area``."""
    if height * width <= area:
        low, high = 0.1, 1.0
    else:
        d = multiple - 1
        b, a, c = d * (height + width), height * width, d * d - area
        low, high = (-b + math.sqrt(b * b - 2 * a * c)) / (2 * a), math.sqrt(area / (height * width))
    for i in range(100):
        scale = high - (high - low) * i / 100
        h, w = int(height * scale), int(width * scale)
        h, w = h + (multiple - h % multiple) % multiple, w + (multiple - w % multiple) % multiple
        if h * w <= area:
            return h, w
    aspect = width / height
    w, h = int((area * aspect) ** 0.5 // multiple * multiple), int((area / aspect) ** 0.5 // multiple * multiple)
    if w >= width or h >= height:
        w, h = width // multiple * multiple, height // multiple * multiple
    return h, w


def load_audio(path: Path) -> dict:
    """An audio file -> ComfyUI AUDIO {"waveform": [1, C, S] float32, "sample_rate"} (decoded by PyAV)."""
    import av
    import numpy as np

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"'{path}' has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate
            resampler = av.AudioResampler(format="fltp", rate=rate)
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
    except av.error.FFmpegError as exc:
        raise InputError(f"'{path}' could not be read as audio ({exc}); use a .wav, .mp3 or .flac file") from exc
    if not chunks:
        raise InputError(f"'{path}' holds no audio samples")
    return {"waveform": torch.from_numpy(np.concatenate(chunks, axis=1))[None].float(), "sample_rate": rate}


def load_pose_video(path: Path, fps: int = 16) -> torch.Tensor:
    """Frames [N, 3, H, W] in [-1, 1], every ``round(source fps / 16)``-th frame from the start (official)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            step = max(1, round(float(stream.average_rate or fps) / fps))
            frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream)) if i % step == 0]
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"--pose_video '{path}' could not be read as a video ({exc})") from exc
    if not frames:
        raise InputError(f"--pose_video '{path}' holds no frames")
    return torch.from_numpy(__import__("numpy").stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def run_s2v(s) -> Path | None:
    """Image + audio -> video file with the audio muxed in.

    Under torchrun every rank runs the clip loop with the DiT sharded (``--dit_fsdp``) and its tokens split
    (``--ulysses_size``), as the official script does; rank 0 writes the file and returns it, the others None."""
    from ..dit import load_dit
    from ..distributed.ranks import is_main, share_from_main
    from ..encoders.audio import load_audio_encoder
    from ..experts import ExpertSet
    from ..sampling import SamplerSettings
    from ..sampling.s2v import fit_frames, generate_s2v
    from ..video import load_image, write_video
    from .pipeline import encode_text, load_vae, official_files, parallel_setup, run_description

    o: S2VOptions = s.s2v
    files = official_files(s.ckpt_dir, s.task, s.variant)
    if not (s.ckpt_dir / AUDIO_FOLDER).is_dir():
        raise InputError(f"--ckpt_dir '{s.ckpt_dir}' lacks the audio encoder folder '{AUDIO_FOLDER}', which s2v-14B "
                         f"needs. Download the complete official Wan2.2-S2V-14B folder")
    audio = load_audio(o.audio) if o.audio is not None else demo_tone()
    image = load_image(s.image)[0] if s.image is not None else demo_portrait()
    height, width = size_within_area(image.shape[1], image.shape[2], o.max_area)
    ref = fit_frames(image[None], height, width)[0]
    pose = None if o.pose_video is None else load_pose_video(o.pose_video)
    par = parallel_setup(s, files)  # None for one process
    device = par.device if par else torch.device(s.device)
    seed = share_from_main(s.seed)  # one noise for all ranks
    embeds = load_audio_encoder(s.ckpt_dir / AUDIO_FOLDER, device=device).encode(audio)
    text = encode_text(files, s, device, par)
    dit = load_dit(files.dits[0], device=device, sharding=par.dit_sharding(device) if par else None,
                   fp8_matmul=s.fp8_matmul)
    if par:
        par.attach([dit])
    model = ExpertSet(dit, compile=s.compile)
    vae = load_vae(files, device)
    settings = SamplerSettings(steps=s.steps, shift=s.shift, solver=s.solver, cfg_high=s.guidance[0],
                               cfg_low=s.guidance[0])
    video = generate_s2v(model, vae, text, ref, embeds, settings, frames_per_clip=o.infer_frames, clips=o.num_clip,
                         seed=seed, pose=pose, start_from_ref=o.start_from_ref, fps=s.variant.fps, device=device)
    if not is_main():
        return None
    frames = ((video.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    s.width, s.height, s.frames = width, height, frames.shape[0]
    return write_video(frames, s.save_file, fps=s.variant.fps, audio=audio,
                       metadata={"comment": run_description(s)})


def demo_tone(seconds: float = 1.2, rate: int = 22050) -> dict:
    """--demo without --audio: a rising tone."""
    t = torch.arange(int(seconds * rate)) / rate
    return {"waveform": (0.4 * torch.sin(2 * math.pi * (220 + 200 * t) * t))[None, None], "sample_rate": rate}


def demo_portrait(height: int = 64, width: int = 64) -> torch.Tensor:
    """--demo without --image: a colour gradient [3, H, W] in [-1, 1]."""
    y = torch.linspace(-1, 1, height).view(-1, 1).expand(height, width)
    x = torch.linspace(-1, 1, width).view(1, -1).expand(height, width)
    return torch.stack([x, y, -x])
