"""Load a Wan VAE from any layout users have, without holding two copies of the weights."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..weights.checkpoint import read_state_dict, wrong_kind_message
from ..errors import CheckpointError
from ..latents import STATS
from ..weights.assign import assign_weights, compute_dtype
from ..weights.owned import in_dtype, read_owned
from .config import WanVAEConfig
from .keys import normalize_keys
from .model import WanVAEModel
from .vae import WanVAE

log = logging.getLogger("wan_experts")

OFFICIAL_FILES = ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth")
CPU_LAYOUT = torch.channels_last_3d  # of the conv weights of a VAE on the CPU (see ``WanVAEModel.layout_for``)
REQUIRED_KEYS = (
    "encoder.conv1.weight", "decoder.conv1.weight", "decoder.head.2.weight", "conv1.weight", "conv2.weight",
)


def load_vae(path, dtype=None, device="cpu") -> WanVAE:
    """Load a Wan 2.1 or 2.2 VAE: official ``.pth``, Comfy-Org ``.safetensors``, or a diffusers folder.

    ``dtype``: compute dtype (None/"default": the file's own float dtype). The version (2.1 / 2.2) is detected.
    On the CPU the weights are read into the VAE's own memory in the form its passes use (one copy: no map of the
    file beside a converted copy); on another device they are assigned from the file's map and moved.
    """
    source = _weights_source(Path(path))
    sd, layout = normalize_keys(read_state_dict(source, what="VAE file"))
    if not all(k in sd for k in REQUIRED_KEYS):
        raise CheckpointError(wrong_kind_message(source, "a Wan VAE", sd.keys()))
    try:
        config = WanVAEConfig.from_state_dict(sd)
    except (CheckpointError, KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(f"'{source.name}' looks like a Wan VAE but its layout is not one: {exc}") from exc
    if config.z_dim not in STATS:
        raise CheckpointError(f"'{source.name}' has {config.z_dim} latent channels; Wan VAEs have 16 (2.1) or 48 (2.2)."
                              f" It is another model's VAE.")
    compute = compute_dtype(dtype, sd["decoder.conv1.weight"].dtype, fallback=torch.float32)
    if torch.device(device).type == "cpu":  # read again, each tensor straight into the form the CPU passes use
        del sd
        sd = normalize_keys(read_owned(source, "VAE file", in_dtype(compute, CPU_LAYOUT)))[0]
    with torch.device("meta"):
        model = WanVAEModel(config)
    assign_weights(model, sd, {}, compute, source, f"Wan {config.version} VAE")
    model.requires_grad_(False).eval()
    vae = WanVAE(model, compute, "cpu", source=str(path))
    if torch.device(device) != torch.device("cpu"):
        vae.to(device)
    log.info("Loaded Wan %s VAE (z %d, base %d/%d) from %s [%s], compute %s", config.version, config.z_dim,
             config.dim, config.dec_dim, source.name, layout, str(compute).replace("torch.", ""))
    return vae


def _weights_source(path: Path) -> Path:
    """The weight file inside a folder: a diffusers pipeline's ``vae/``, or the official VAE of a Wan-AI folder."""
    if not path.is_dir():
        return path
    if (path / "vae").is_dir():
        return path / "vae"
    for name in OFFICIAL_FILES:
        if (path / name).is_file():
            return path / name
    return path
