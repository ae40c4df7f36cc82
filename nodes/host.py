"""The only module that imports ComfyUI.

Inside ComfyUI it forwards to ``folder_paths``, ``comfy.utils`` and ``comfy.model_management``, and installs the
engine's memory host (``ComfyMemory``: our models share the GPU with ComfyUI's). Without ComfyUI (tests, scripts) it
falls back to plain folders: models under ``$WAN_EXPERTS_MODELS/<kind>/`` (default ``./models``; diffusion
models also under ``unet/``, where ComfyUI users keep GGUF files) and outputs under ``$WAN_EXPERTS_OUTPUT``
(default ``./output``), and the engine manages its memory alone.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ..wan.memory.devices import same_device
from ..wan.memory.place import MemoryHost, Residency, residency, set_memory_host

log = logging.getLogger("wan_experts")

try:  # pragma: no cover - exercised only inside a ComfyUI process
    import folder_paths  # type: ignore
    import comfy.model_management as model_management  # type: ignore
    import comfy.model_patcher as model_patcher  # type: ignore
    import comfy.utils as comfy_utils  # type: ignore

    IN_COMFY = True
except ImportError:
    folder_paths = model_management = model_patcher = comfy_utils = None
    IN_COMFY = False

STEP_CACHE_KIND = "wan_step_cache"  # calibrated TeaCache / MagCache data (python -m wan.cache.calibrate)
MODEL_KINDS = ("diffusion_models", "text_encoders", "vae", "clip_vision", "loras", "LLM", STEP_CACHE_KIND,
               "audio_encoders")
# registered as models/<kind> where ComfyUI core lacks them (LLM: one folder per model; wan_step_cache: JSON files;
# audio_encoders: wav2vec2 for S2V, in core since its audio-encoder nodes)
EXTRA_KINDS = ("LLM", STEP_CACHE_KIND, "audio_encoders")
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt", ".safetensors.index.json", ".gguf")
# More folders of a kind (standalone; ComfyUI's "diffusion_models" already covers models/unet) and file types
# ComfyUI does not list for it (its lists leave out .gguf).
EXTRA_FOLDERS = {"diffusion_models": ("unet",)}
EXTRA_SUFFIXES = {"diffusion_models": (".gguf",), "text_encoders": (".gguf",)}


if IN_COMFY:  # pragma: no cover - exercised only inside a ComfyUI process
    for _kind in EXTRA_KINDS:
        if _kind not in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(_kind, os.path.join(folder_paths.models_dir, _kind))


class MissingModelError(FileNotFoundError):
    """A model file named in a graph is not where the host looks for it."""


def models_root() -> Path:
    return Path(os.environ.get("WAN_EXPERTS_MODELS", "models"))


def model_folder(kind: str) -> Path:
    """The folder a user should put files of ``kind`` into (first registered folder inside ComfyUI)."""
    return model_folders(kind)[0]


def model_folders(kind: str) -> list[Path]:
    """Every folder the host searches for models of ``kind`` (the first is where new ones should go)."""
    _check_kind(kind)
    if IN_COMFY:
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    return [models_root() / k for k in (kind, *EXTRA_FOLDERS.get(kind, ()))]


def list_models(kind: str) -> list[str]:
    """File names (relative to the kind's folders) offered in a node's file widget."""
    _check_kind(kind)
    if IN_COMFY:
        return sorted(set(folder_paths.get_filename_list(kind)) | set(_comfy_extra_files(kind)))
    names = {p.relative_to(root).as_posix() for root in model_folders(kind) if root.is_dir()
             for p in root.rglob("*") if p.is_file() and _is_weight_file(p)}
    return sorted(names)


def model_path(kind: str, name: str) -> str:
    """Full path of a model file picked in a widget; a clear error naming the folder when it is missing."""
    _check_kind(kind)
    if not name:
        raise MissingModelError(f"No {kind} file was selected. Put one in '{model_folder(kind)}' and pick it.")
    if IN_COMFY:
        path = folder_paths.get_full_path(kind, name)
    else:  # like ComfyUI: the name is relative to the folders (no absolute paths, no '..') and a file
        relative = os.path.relpath(os.path.join("/", name), "/")
        path = next((str(f / relative) for f in model_folders(kind) if "\0" not in name and (f / relative).is_file()),
                    None)
    if path is None:
        raise MissingModelError(
            f"Model file '{name}' was not found in the {kind} folder. Download it and put it in "
            f"'{model_folder(kind)}' (README, 'Model files'), then refresh the node."
        )
    return path


def output_dir() -> Path:
    if IN_COMFY:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("WAN_EXPERTS_OUTPUT", "output"))


def compute_device() -> torch.device:
    if IN_COMFY:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    if IN_COMFY:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def free_memory(device: torch.device | None = None) -> None:
    """Give cached device memory back (after moving a model off the device)."""
    if IN_COMFY:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_interrupted() -> None:
    """Raise the host's interruption exception when the user pressed cancel."""
    if IN_COMFY:
        model_management.throw_exception_if_processing_interrupted()


class Progress:
    """Progress bar of ``total`` steps; inside ComfyUI every update is also a cancel point.

    With ``preview_channels`` (16 or 48: Wan 2.1 / 2.2 latents), updates may carry the sampler's current estimate
    of the clean latents, which ComfyUI turns into the live preview image its preview setting asks for.
    """

    def __init__(self, total: int, preview_channels: int | None = None):
        self.total = int(total)
        self.done = 0
        self._bar = comfy_utils.ProgressBar(self.total) if IN_COMFY else None
        self._previewer = latent_previewer(preview_channels) if preview_channels else None

    def update(self, n: int = 1, preview_latents: torch.Tensor | None = None) -> None:
        self.done += n
        if self._bar is not None:
            preview = None
            if self._previewer is not None and preview_latents is not None:
                preview = self._previewer.decode_latent_to_preview_image("JPEG", preview_latents)
            self._bar.update_absolute(self.done, self.total, preview)
        check_interrupted()


def latent_previewer(channels: int):
    """ComfyUI's own previewer for Wan latents (normalised, [B, C, T, h, w]); None outside ComfyUI or when
    previews are off."""
    if not IN_COMFY:
        return None
    try:  # pragma: no cover - exercised only inside a ComfyUI process
        import comfy.latent_formats as latent_formats  # type: ignore
        import latent_preview  # type: ignore

        fmt = latent_formats.Wan22() if channels == 48 else latent_formats.Wan21()
        return latent_preview.get_previewer(compute_device(), fmt)
    except Exception as exc:  # an older ComfyUI without Wan latent formats: no previews, sampling goes on
        log.warning("Wan Experts: live previews unavailable (%s)", exc)
        return None


def metadata_disabled() -> bool:
    """True when ComfyUI runs with ``--disable-metadata`` (standalone: ``$WAN_EXPERTS_DISABLE_METADATA`` is 1)."""
    if IN_COMFY:
        from comfy.cli_args import args  # type: ignore

        return bool(getattr(args, "disable_metadata", False))
    return os.environ.get("WAN_EXPERTS_DISABLE_METADATA", "").strip().lower() in ("1", "true", "yes", "on")


def make_video(images: torch.Tensor, fps: float, audio: dict | None = None):
    """ComfyUI's ``VIDEO`` value for frames [N, H, W, 3] in 0..1 at ``fps`` (and an optional AUDIO track): core's
    ``VideoFromComponents`` (as core Create Video builds it) inside ComfyUI, a ``StandaloneVideo`` with the same
    methods otherwise."""
    video_types = _core_video_types() if IN_COMFY else None
    if video_types is None:
        return StandaloneVideo(VideoComponents(images=images, frame_rate=Fraction(fps), audio=audio))
    from_components, components = video_types
    return from_components(components(images=images, audio=audio, frame_rate=Fraction(fps)))


def _core_video_types():
    """(VideoFromComponents, VideoComponents) from core's video API; None in a ComfyUI older than that API."""
    try:
        from comfy_api.latest import InputImpl, Types  # type: ignore

        return InputImpl.VideoFromComponents, Types.VideoComponents
    except ImportError:
        pass
    try:  # ComfyUI before comfy_api.latest
        from comfy_api.input_impl import VideoFromComponents  # type: ignore
        from comfy_api.util import VideoComponents as CoreComponents  # type: ignore

        return VideoFromComponents, CoreComponents
    except ImportError:
        log.warning("Wan Experts: this ComfyUI has no VIDEO API; the VIDEO output is a plain stand-in object")
        return None


@dataclass
class VideoComponents:
    """The fields of core's ``VideoComponents``: frames [N, H, W, 3] in 0..1 and the frame rate."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: dict | None = None
    metadata: dict | None = None


class StandaloneVideo:
    """Outside ComfyUI: a ``VIDEO`` value with the methods of core's ``VideoFromComponents``."""

    def __init__(self, components: VideoComponents):
        self._components = components

    def get_components(self) -> VideoComponents:
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        return self._components.images.shape[2], self._components.images.shape[1]

    def get_duration(self) -> float:
        return float(self._components.images.shape[0] / self._components.frame_rate)

    def save_to(self, path, format="auto", codec="auto", metadata: dict | None = None) -> None:
        """An mp4 (H.264) at ``path``; ``metadata`` values are stored as JSON tags, as core does."""
        import json

        from ..wan.video import write_video

        tags = {str(k): json.dumps(v) for k, v in (metadata or {}).items()}
        write_video(self._components.images, path, fps=float(self._components.frame_rate), metadata=tags,
                    audio=self._components.audio)


def _comfy_extra_files(kind: str) -> list[str]:  # pragma: no cover - exercised only inside a ComfyUI process
    suffixes = EXTRA_SUFFIXES.get(kind)
    if not suffixes:
        return []
    names = []
    for folder in folder_paths.get_folder_paths(kind):
        files, _ = folder_paths.recursive_search(folder, excluded_dir_names=[".git"])
        names += folder_paths.filter_files_extensions(files, suffixes)
    return names


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind '{kind}'; expected one of {MODEL_KINDS}")


def _is_weight_file(p: Path) -> bool:
    return p.name.lower().endswith(WEIGHT_SUFFIXES) and not p.name.startswith(".")


# -- sharing the GPU with ComfyUI ----------------------------------------------------------------------------------
# Two directions, through the least of ComfyUI's model management we could rely on:
# - Before the engine puts a model (an expert, a block-streaming plan, an encoder, the VAE) on the GPU it asks for
#   the bytes: ``model_management.free_memory(bytes, device)`` unloads ComfyUI's idle models, least recently used
#   first, until that much is free. Its signature has not changed since 2023; we add ComfyUI's own inference margin
#   (``minimum_inference_memory``) as ComfyUI does for its loads.
# - ComfyUI can only evict what is in ``current_loaded_models``, whose entries ``load_models_gpu`` makes from
#   ``ModelPatcher`` objects. A model of ours is registered only while it idles on the GPU (an encoder with
#   keep_loaded, A14B experts with keep_both after sampling), as a small ``ModelPatcher`` subclass: its load is a
#   no-op (the model is already there) and its detach gives the model back its memory-mapped weights
#   (``Residency.evict``: no copy). A subclass, rather than a look-alike object, keeps every method ComfyUI calls
#   on loaded models (now and in later versions) defined; overriding only the size / load / unload methods keeps
#   ComfyUI's weight patching and partial "lowvram" loading away from our modules.
# Not chosen: a plain ModelPatcher that moves our models itself (its unload calls module.to(offload), which turns
# memory-mapped weights into RAM copies, and partial loading assumes comfy.ops layers); patching ComfyUI functions.
class ComfyMemory(MemoryHost):
    def __init__(self, mm, patcher_base):
        self.mm = mm
        self.handle_type = _idle_model_type(patcher_base)

    def make_room(self, nbytes: int, device: torch.device) -> None:
        if device.type == "cpu":
            return
        margin = getattr(self.mm, "minimum_inference_memory", lambda: 0)()
        self.mm.free_memory(int(nbytes + margin), self._device(device))

    def keep_idle(self, resident: Residency) -> None:
        handle = resident.host_handle
        if handle is None:
            handle = self.handle_type(resident.owner, self._device(resident.device), self.mm.unet_offload_device())
            resident.host_handle = handle
        if not handle.registered:
            handle.registered = True
            self.mm.load_models_gpu([handle])

    def _device(self, device: torch.device) -> torch.device:
        """ComfyUI compares devices with ``==``: use its own spelling of the compute device (``cuda:0``)."""
        own = self.mm.get_torch_device()
        return own if same_device(own, device) else device


def _idle_model_type(base):
    class WanIdleModel(base):
        """One of our models idling on the GPU, as ComfyUI's memory manager sees it."""

        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.resident = residency(model)
            self.registered = False
            super().__init__(model, load_device, offload_device, size, weight_inplace_update)

        def model_size(self):
            return self.resident.device_bytes

        def loaded_size(self):
            return self.resident.device_bytes

        def current_loaded_device(self):
            return self.load_device if self.resident.loaded else self.offload_device

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            return 0  # already on the device: the engine placed it

        def partially_unload(self, device_to, memory_to_free=0):
            return 0  # all or nothing: ComfyUI then detaches the whole model

        def detach(self, unpatch_all=True):
            if unpatch_all:
                self.registered = False
                self.resident.evict()
            return self.model

    return WanIdleModel


if IN_COMFY:  # pragma: no cover - exercised only inside a ComfyUI process
    set_memory_host(ComfyMemory(model_management, model_patcher.ModelPatcher))
