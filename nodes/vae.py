"""Nodes for the Wan VAEs: load one (``WAN_VAE``), encode frames to a raw ``LATENT``, decode a ``LATENT`` to frames."""
from __future__ import annotations

import torch

from ..wan.memory.devices import module_device
from ..wan.memory.place import leave, place
from ..wan.vae.loader import load_vae
from ..wan.vae.vae import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, TILED_MODES, WanVAE
from . import host
from .choices import DTYPE_CHOICES

CATEGORY = "Wan Experts/vae"


class ChunkProgress:
    """Adapter from the engine's ``callback(done, total)`` to a host progress bar (a cancel point per chunk)."""

    def __init__(self):
        self.bar: host.Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total:
            self.bar = host.Progress(total)
            self.bar.done = done - 1
        self.bar.update(1)


def on_compute_device(vae: WanVAE, run):
    """Run ``run()`` with the VAE placed on the compute device (``wan.memory.place``: after asking the host for room), then
    give it back (its own weights were never moved) and free the cached memory."""
    host.check_interrupted()
    home = vae.device
    place(vae.model, host.compute_device(), what="VAE")
    vae.device = module_device(vae.model)
    try:
        return run()
    finally:
        if leave(vae.model):
            vae.device = home
            host.free_memory()


class WanExpertsLoadVAE:
    DISPLAY_NAME = "Load Wan VAE"
    DESCRIPTION = ("Loads a Wan VAE from models/vae: Wan2.1_VAE (16 latent channels; for Wan 2.1 and Wan 2.2 A14B) or "
                   "Wan2.2_VAE (48 channels; for Wan 2.2 TI2V-5B). Official .pth, Comfy-Org .safetensors and "
                   "diffusers files work; the version is detected from the weights.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("WAN_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE, for Wan VAE Encode / Wan VAE Decode and image conditioning.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (host.list_models("vae"), {"tooltip": (
                "VAE file in models/vae (e.g. wan_2.1_vae.safetensors).")}),
            "dtype": (DTYPE_CHOICES, {"default": "default", "tooltip": (
                "Compute precision. 'default' keeps the file's precision; fp32 is the most exact, bf16 uses half "
                "the memory.")}),
        }}

    def load(self, vae_name, dtype="default"):
        return (load_vae(host.model_path("vae", vae_name), dtype=dtype, device=host.offload_device()),)


class WanExpertsVAEEncode:
    DISPLAY_NAME = "Wan VAE Encode"
    DESCRIPTION = ("Encodes frames (a video as an IMAGE batch) to raw Wan latents. Frame counts other than 4n+1 are "
                   "trimmed to the largest 4n+1 (logged); width and height must be multiples of 8 (Wan 2.1 VAE) or "
                   "16 (Wan 2.2 VAE). Falls back to tiles when the GPU runs out of memory.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Raw VAE latents [1, channels, 1 + (frames-1)/4, height/s, width/s].",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WAN_VAE", {"tooltip": "The VAE from Load Wan VAE."}),
            "image": ("IMAGE", {"tooltip": "Frames to encode, in order (N frames = one video)."}),
        }}

    def encode(self, vae: WanVAE, image: torch.Tensor):
        video = image[..., :3].permute(3, 0, 1, 2).unsqueeze(0).float() * 2.0 - 1.0
        latents = on_compute_device(vae, lambda: vae.encode(video, callback=ChunkProgress(), output_device="cpu"))
        return ({"samples": latents},)


class WanExpertsVAEDecode:
    DISPLAY_NAME = "Wan VAE Decode"
    DESCRIPTION = ("Decodes raw Wan latents to frames. A batch of latent videos decodes to their frames one after "
                   "another. Tiling decodes overlapping tiles through the whole video to save memory.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The decoded frames, 1 + 4 x (latent frames - 1) per video.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("WAN_VAE", {"tooltip": "The VAE that matches the model that made the latents."}),
            "samples": ("LATENT", {"tooltip": "Raw Wan latents from a sampler or Wan VAE Encode."}),
            "tiled": (list(TILED_MODES), {"default": "auto", "tooltip": (
                "'auto': whole frames, retried in tiles if the GPU runs out of memory; 'on': always tiles (less "
                "memory, tiny differences near tile edges); 'off': never tiles.")}),
            "tile_size": ("INT", {"default": DEFAULT_TILE_SIZE, "min": 64, "max": 4096, "step": 16, "tooltip": (
                "Tile width and height in pixels (rounded down to the VAE's 8 or 16 pixel grid).")}),
            "overlap": ("INT", {"default": DEFAULT_OVERLAP, "min": 0, "max": 1024, "step": 16, "tooltip": (
                "Overlap between neighbouring tiles in pixels, blended smoothly; at most half the tile.")}),
        }}

    def decode(self, vae: WanVAE, samples: dict, tiled="auto", tile_size=DEFAULT_TILE_SIZE, overlap=DEFAULT_OVERLAP):
        latents = samples["samples"]
        video = on_compute_device(vae, lambda: vae.decode(latents, tiled=tiled, tile_size=tile_size, overlap=overlap,
                                                           callback=ChunkProgress(), output_device="cpu"))
        frames = video.add_(1.0).mul_(0.5).permute(0, 2, 3, 4, 1)  # [B, F, H, W, 3]
        return (frames.reshape(-1, *frames.shape[2:]).contiguous(),)


NODES = {"WanExpertsLoadVAE": WanExpertsLoadVAE, "WanExpertsVAEEncode": WanExpertsVAEEncode,
         "WanExpertsVAEDecode": WanExpertsVAEDecode}
