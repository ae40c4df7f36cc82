"""The Wan diffusion transformer."""
from .config import WanDiTConfig
from .loader import load_dit
from .model import WanDiT

__all__ = ["WanDiT", "WanDiTConfig", "load_dit"]
