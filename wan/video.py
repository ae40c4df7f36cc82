"""Write frames to a video file (mp4 / H.264 or webm / VP9) through PyAV, never overwriting and never leaving a
half-written file behind; read one back (``read_video``).

Frames are float [N, H, W, 3] in 0..1 (ComfyUI's ``IMAGE``). yuv420p stores colour at half resolution, so an
odd width or height is padded by one pixel (the last row / column repeated) rather than refused. Metadata (the
graph that made the video) goes into the container tags; mp4 needs ``movflags=use_metadata_tags`` for custom
tags, the same flag core ComfyUI uses, so ComfyUI can read the workflow back from the file.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from .checks import finite_number, whole_number
from .errors import InputError, WanError
from .finite import check_input
from .video_audio import Track, add_audio_stream, mux_audio, video_track

log = logging.getLogger("wan_experts")


class OutputFolderError(WanError, OSError):
    """The output folder cannot be created or written to."""


@dataclass(frozen=True)
class VideoFormat:
    name: str  # container name for PyAV and the file extension
    codec: str
    crf_max: int
    options: tuple[tuple[str, str], ...] = ()


FORMATS = {
    "mp4": VideoFormat("mp4", "libx264", 51, (("movflags", "use_metadata_tags+faststart"),)),
    "webm": VideoFormat("webm", "libvpx-vp9", 63),
}
PIXEL_FORMAT = "yuv420p"
# File names: portable on Linux, macOS and Windows, and short enough for the counter and the hidden partial file
# (".<name>.<pid>.partial.webm") to stay within the common 255-byte name limit.
MAX_PREFIX_CHARS = 1000
MAX_NAME_BYTES = 180
MAX_FOLDER_DEPTH = 16
FORBIDDEN_CHARACTERS = '<>:"|?*'
RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL"} | {f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10)}


@dataclass(frozen=True)
class SavedVideo:
    path: Path
    filename: str
    subfolder: str  # relative to the output folder, "/"-separated, "" for the folder itself


def save_video(frames: torch.Tensor, output_dir, filename_prefix: str = "video/Wan", fps: float = 16.0,
               format: str = "mp4", crf: int = 19, metadata: dict[str, str] | None = None, audio=None) -> SavedVideo:
    """Encode ``frames`` to ``<output_dir>/<subfolder>/<name>_<counter:05>_.<ext>`` with a fresh counter.
    ``audio`` (ComfyUI AUDIO, optional): the sound track, from frame 0, trimmed to the video (``wan.video_audio``)."""
    fmt = _check_format(format, crf)
    folder, name, subfolder = split_prefix(Path(output_dir), filename_prefix)
    final = _write_through_temp(frames, folder, name, fps, fmt, crf, metadata,
                                lambda tmp: _claim_name(tmp, folder, name, fmt.name), keep=Path(output_dir),
                                audio=audio)
    return SavedVideo(final, final.name, subfolder)


def write_video(frames: torch.Tensor, path, fps: float = 16.0, crf: int = 19,
                metadata: dict[str, str] | None = None, audio=None) -> Path:
    """Encode ``frames`` to exactly ``path`` (.mp4 or .webm), replacing an existing file only once complete."""
    path = Path(path)
    format = path.suffix.lower().lstrip(".")
    if format not in FORMATS:
        raise InputError(f"cannot write '{path.name}': the file name must end in .mp4 or .webm")
    fmt = _check_format(format, crf)

    def replace(tmp: Path) -> Path:
        os.replace(tmp, path)
        return path

    return _write_through_temp(frames, path.parent, path.stem, fps, fmt, crf, metadata, replace, audio=audio)


def _write_through_temp(frames, folder: Path, stem: str, fps: float, fmt: VideoFormat, crf: int, metadata,
                        finish, keep: Path | None = None, audio=None) -> Path:
    """Check, encode to a hidden temporary file in ``folder``, then ``finish(tmp)`` names it. Whatever goes wrong
    (an OS error, an encoder error, a cancel), the temporary file and any folder made for it below ``keep`` are
    removed."""
    pixels = frames_to_uint8(frames)
    check_fps(fps)
    track = None if audio is None else video_track(audio, pixels.shape[0], fps)
    created = _make_folder(folder, keep)
    tmp = folder / f".{stem}.{os.getpid()}.partial.{fmt.name}"
    final = None
    try:
        encode(pixels, tmp, fps, fmt, crf, metadata or {}, track)
        final = finish(tmp)
    except OSError as exc:
        raise OutputFolderError(f"could not write the video into '{folder}': {exc}. Check that the folder "
                                f"exists, is writable and has free space.") from exc
    finally:
        _remove(tmp)
        if final is None:
            _remove_empty_folders(created)
    log.info("Saved %d frames (%dx%d, %.3g fps) to %s", pixels.shape[0], pixels.shape[2], pixels.shape[1], fps, final)
    return final


def read_video(path: Path) -> torch.Tensor:
    """All frames of a video file -> [N, H, W, 3] float in 0..1 (decoded by PyAV)."""
    import av

    try:
        with av.open(str(path)) as container:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise InputError(f"'{path}' could not be read as a video ({exc}); use an .mp4 or .webm file") from exc
    if not frames:
        raise InputError(f"'{path}' holds no video frames")
    return torch.stack(frames).float() / 255.0


def load_image(path: Path):
    """An image file -> [1, 3, H, W] in [-1, 1] (decoded by PyAV, so no extra image library is needed)."""
    import av

    try:
        with av.open(str(path)) as container:
            rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"'{path}' could not be read as an image ({exc}); use a .png or .jpg file") from exc
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0


def workflow_metadata(prompt=None, extra_pnginfo=None) -> dict[str, str]:
    """Container tags as core ComfyUI writes them: ``prompt`` and every ``extra_pnginfo`` key (``workflow``), JSON."""
    tags = {}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        tags[str(key)] = json.dumps(value)
    return tags


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """IMAGE [N, H, W, 3|4] in 0..1 -> uint8 [N, H', W', 3] with even H', W' (edge-padded when odd)."""
    if not torch.is_tensor(frames) or frames.dim() != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] < 1:
        shape = tuple(frames.shape) if torch.is_tensor(frames) else type(frames).__name__
        raise InputError(f"images must be frames [N, H, W, 3] with at least one frame; got {shape}")
    check_input(frames, "images to save", "they come from the VAE decode; see its error, or decode in bf16/fp32")
    rgb = frames[..., :3].detach().float().cpu()
    h, w = rgb.shape[1:3]
    if h % 2 or w % 2:
        log.warning("Video size %dx%d is odd; padding to %dx%d (yuv420p needs even sizes)", w, h, w + w % 2, h + h % 2)
        rgb = torch.nn.functional.pad(rgb.permute(0, 3, 1, 2), (0, w % 2, 0, h % 2), mode="replicate")
        rgb = rgb.permute(0, 2, 3, 1)
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def encode(pixels: torch.Tensor, path: Path, fps: float, fmt: VideoFormat, crf: int, tags: dict[str, str],
           track: Track | None = None) -> None:
    """Write uint8 frames [N, H, W, 3] (and a sound track) to ``path`` in ``fmt``."""
    import av

    with av.open(str(path), mode="w", format=fmt.name, options=dict(fmt.options)) as container:
        for key, value in tags.items():
            container.metadata[key] = value
        stream = container.add_stream(fmt.codec, rate=video_rate(fps))
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = PIXEL_FORMAT
        stream.options = {"crf": str(crf)} | ({"b:v": "0"} if fmt.codec == "libvpx-vp9" else {})
        sound = None if track is None else add_audio_stream(container, track, fmt.name)
        for frame in pixels.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
        if sound is not None:
            mux_audio(container, sound, track)


def split_prefix(output_dir: Path, filename_prefix: str) -> tuple[Path, str, str]:
    """(folder, file name stem, subfolder) for a prefix such as ``video/Wan``; refuses to leave ``output_dir``."""
    problem = prefix_problem(filename_prefix)
    if problem is not None:
        raise InputError(problem)
    parts = _parts(filename_prefix)
    name, sub = parts[-1], parts[:-1]
    return output_dir.joinpath(*sub), name, "/".join(sub)


def prefix_problem(filename_prefix) -> str | None:
    """Why ``filename_prefix`` cannot name a file inside the output folder on any system, or None when it can."""
    if not isinstance(filename_prefix, str):
        return f"filename_prefix must be text; got {type(filename_prefix).__name__}"
    prefix = filename_prefix.replace("\\", "/").strip()
    bad = next((c for c in prefix if ord(c) < 32 or ord(c) == 127 or c in FORBIDDEN_CHARACTERS), None)
    if bad is not None:
        return (f"filename_prefix contains {bad!r}; file names cannot hold control characters or any of "
                f"{FORBIDDEN_CHARACTERS}")
    parts = _parts(prefix)
    if not parts or ".." in parts or prefix.startswith("/") or len(prefix) > MAX_PREFIX_CHARS:
        return (f"filename_prefix '{prefix[:80]}' must be a name, optionally with subfolders inside the output "
                f"folder (e.g. 'video/Wan'), at most {MAX_PREFIX_CHARS} characters; absolute paths and '..' are "
                f"not allowed")
    if len(parts) > MAX_FOLDER_DEPTH:
        return f"filename_prefix has {len(parts) - 1} subfolders; use at most {MAX_FOLDER_DEPTH - 1}"
    return next((p for p in map(_name_problem, parts) if p is not None), None)


def _parts(prefix: str) -> list[str]:
    return [p for p in prefix.replace("\\", "/").strip().split("/") if p not in ("", ".")]


def _name_problem(part: str) -> str | None:
    if len(part.encode("utf-8")) > MAX_NAME_BYTES:
        return f"filename_prefix part '{part[:40]}...' is longer than {MAX_NAME_BYTES} bytes; shorten it"
    if part.rstrip(" .").split(".")[0].upper() in RESERVED_NAMES:
        return f"filename_prefix part '{part}' is a reserved device name on Windows; choose another name"
    if part.startswith(".") or part.endswith((" ", ".")):
        return f"filename_prefix part '{part}' starts with '.' or ends with a space or '.'; choose another name"
    return None


def next_counter(folder: Path, name: str) -> int:
    """1 + the highest counter of existing ``<name>_<digits>_.*`` files (ComfyUI's numbering), 1 when none."""
    pattern = re.compile(re.escape(name) + r"_(\d+)_\.")
    found = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
    return max(found, default=0) + 1


def _claim_name(tmp: Path, folder: Path, name: str, ext: str) -> Path:
    """Move the finished file to the first free counter; an existing file is never replaced."""
    counter = next_counter(folder, name)
    while True:
        final = folder / f"{name}_{counter:05}_.{ext}"
        try:
            os.link(tmp, final)  # fails if ``final`` exists, unlike a rename on POSIX
            return final
        except FileExistsError:
            counter += 1
        except (AttributeError, OSError):  # no hard links on this file system: check, then rename
            if not final.exists():
                os.replace(tmp, final)
                return final
            counter += 1


def _make_folder(folder: Path, keep: Path | None = None) -> list[Path]:
    """Create ``folder`` (and its parents); returns the new folders below ``keep`` (all when None), deepest
    first."""
    created = [p for p in (folder, *folder.parents) if not p.exists() and (keep is None or keep in p.parents)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty_folders(created)
        raise OutputFolderError(f"could not create the output folder '{folder}': {exc.strerror or exc}. Choose "
                                f"another filename_prefix or output folder, or fix its permissions.") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        _remove_empty_folders(created)
        raise OutputFolderError(f"the output folder '{folder}' is not writable. Fix its permissions or choose "
                                f"another output folder.")
    return created


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # never hide the error that brought us here
        log.warning("Could not remove the partial file %s: %s", path, exc)


def _remove_empty_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_format(format: str, crf: int) -> VideoFormat:
    if format not in FORMATS:
        raise InputError(f"video format '{format}' is unknown; use one of {sorted(FORMATS)}")
    fmt = FORMATS[format]
    whole_number(crf, f"crf for {format}", 0, fmt.crf_max, hint="0 is the best quality, the highest the smallest")
    return fmt


RATE_STEP = 1000  # frame rates are stored in steps of 1/1000 frame per second


def video_rate(fps: float) -> Fraction:
    """The frame rate the file stores: ``fps`` to the nearest 1/1000."""
    return Fraction(round(fps * RATE_STEP), RATE_STEP)


def check_fps(fps: float) -> None:
    """A finite rate the container can store: a rate that rounds to 0 would be written as the encoder's default
    (24 fps) instead, so it is refused; one that rounds to another value is written rounded, with a warning."""
    fps = finite_number(fps, "fps", 0.0, 1000.0, low_open=True, hint="Wan 2.1: 16, Wan 2.2 TI2V-5B: 24")
    rate = video_rate(fps)
    if rate == 0:
        raise InputError(f"fps {fps!r} is out of range: a video file stores frame rates in steps of "
                         f"1/{RATE_STEP}, so it must be {1 / RATE_STEP:g} or more; Wan 2.1: 16, Wan 2.2 TI2V-5B: 24")
    if abs(float(rate) - fps) > 1e-9 * fps:
        log.warning("fps %r is stored as %s (%.3f): video files store frame rates in steps of 1/%d", fps, rate,
                    float(rate), RATE_STEP)
