"""The Wan 2.1 and 2.2 video VAEs: causal time chunking as the official code, tiling, every file layout.

May import: ``wan.weights``, ``wan.budget`` (the check before a pass), ``wan.latents``, ``wan.finite``, ``wan.checks``,
``wan.errors``; never the DiT, sampling or the run.
"""
from .config import WAN21_VAE, WAN22_VAE, WanVAEConfig
from .loader import load_vae
from .model import WanVAEModel
from .vae import WanVAE

__all__ = ["WAN21_VAE", "WAN22_VAE", "WanVAE", "WanVAEConfig", "WanVAEModel", "load_vae"]
