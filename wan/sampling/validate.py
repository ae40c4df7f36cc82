"""Checks run before the first sampling step: each names the input, what was found and what to do."""
from __future__ import annotations

import torch

from ..conditioning import ImageCond, TextEmbeds
from ..errors import InputError
from ..experts import ExpertSet
from ..finite import check_input
from .shapes import PATCH


def model_task(experts: ExpertSet) -> str:
    """"t2v" (text only), "i2v" (36-channel concat models), or "ti2v" (48-channel 5B model)."""
    cfg = experts.config
    if cfg.in_dim == 48:
        return "ti2v"
    return "i2v" if cfg.in_dim > cfg.out_dim else "t2v"


def check_sampling_inputs(experts: ExpertSet, latents: torch.Tensor, text: TextEmbeds,
                          image_cond: ImageCond | None, needs_negative: bool) -> None:
    name = experts.variant.id if experts.variant else "Wan"
    check_latents(experts, latents, name)
    check_text(experts, text, latents.shape[0], needs_negative)
    check_image_cond(experts, image_cond, latents, name)
    check_finite_inputs(latents, text, image_cond)


def check_finite_inputs(latents: torch.Tensor, text: TextEmbeds, image_cond: ImageCond | None) -> None:
    """NaN/inf in an input would spread to the whole video; name the input instead."""
    fix = "check the node that made it (a NaN setting, or a damaged file)"
    check_input(latents, "latent", fix)
    check_input(text.positive, "positive text embedding", fix)
    check_input(text.negative, "negative text embedding", fix)
    if image_cond is not None:
        for name in ("y", "clip", "first_latent"):
            check_input(getattr(image_cond, name), f"image conditioning ({name})", fix)


def check_latents(experts: ExpertSet, latents: torch.Tensor, name: str) -> None:
    cfg = experts.config
    if not torch.is_tensor(latents) or latents.dim() != 5:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise InputError(f"the latent must be a video latent [B, C, T, h, w]; got {shape}. Use Wan Empty Latent "
                         f"or Wan Image To Video to make one")
    c = latents.shape[1]
    if c != cfg.out_dim:
        vae = {16: "Wan 2.1 VAE", 48: "Wan 2.2 VAE"}
        raise InputError(
            f"the latent has {c} channels ({vae.get(c, 'unknown VAE')}) but this {name} model works on "
            f"{cfg.out_dim}-channel latents ({vae.get(cfg.out_dim, '?')}). Make the latent with the VAE that "
            f"belongs to the model (Wan 2.2 VAE only for TI2V-5B, Wan 2.1 VAE for every other model)")
    h, w = latents.shape[-2:]
    if h % PATCH or w % PATCH:
        raise InputError(f"the latent is {h}x{w} (height x width), not divisible by the DiT patch {PATCH}; the "
                         f"pixel size must be a multiple of {PATCH * (16 if c == 48 else 8)}")


def check_text(experts: ExpertSet, text: TextEmbeds, batch: int, needs_negative: bool) -> None:
    if not isinstance(text, TextEmbeds):
        raise InputError(f"text must be the output of Wan Text Encode (WAN_TEXT); got {type(text).__name__}")
    dim = experts.config.text_dim
    if text.positive is None or (needs_negative and text.negative is None):
        which = "positive" if text.positive is None else "negative"
        raise InputError(f"the {which} prompt embedding is missing; guidance (cfg other than 1) needs both. Encode "
                         f"both prompts (an empty negative uses the official default) or set cfg to 1")
    for label, emb in (("positive", text.positive), ("negative", text.negative if needs_negative else None)):
        if emb is None:
            continue
        if emb.dim() != 3 or emb.shape[-1] != dim or emb.shape[0] not in (1, batch):
            raise InputError(f"the {label} text embedding {tuple(emb.shape)} does not fit this model: expected "
                             f"[1 or {batch}, tokens, {dim}]. Use the text encoder that belongs to the model (UMT5)")


def check_image_cond(experts: ExpertSet, cond: ImageCond | None, latents: torch.Tensor, name: str) -> None:
    task = model_task(experts)
    kind = cond.kind if cond is not None else None
    if task == "t2v" and kind is not None:
        raise InputError(f"image conditioning was connected, but this {name} model is text-to-video and cannot use "
                         f"it. Disconnect it, or load an image-to-video model (I2V / FLF2V / TI2V-5B)")
    if task == "i2v" and kind not in ("i2v", "flf2v"):
        found = "none" if kind is None else f"'{kind}' conditioning"
        raise InputError(f"this {name} model is image-to-video and needs the start image: connect the image "
                         f"conditioning of Wan Image To Video (made with the Wan 2.1 VAE); found {found}")
    if task == "ti2v" and kind not in (None, "ti2v"):
        raise InputError(f"this {name} (TI2V-5B) model takes a start image made with the Wan 2.2 VAE; the "
                         f"connected '{kind}' conditioning belongs to a 36-channel I2V model")
    if kind in ("i2v", "flf2v"):
        _check_y(experts, cond, latents, name)
    if kind == "ti2v" or (kind is not None and cond.first_latent is not None):
        _check_leading(cond.first_latent, latents)


def _check_leading(first: torch.Tensor | None, latents: torch.Tensor) -> None:
    """The known leading latent frames (start image, or the frames an extension continues from)."""
    n = first.shape[2] if torch.is_tensor(first) and first.dim() == 5 else 1
    if not 1 <= n <= latents.shape[2]:
        raise InputError(f"the image conditioning holds {n} known latent frames, more than the latent's "
                         f"{latents.shape[2]}; make the video longer")
    _check_batched(first, latents, (latents.shape[1], n) + tuple(latents.shape[-2:]), "start latent")


def _check_y(experts: ExpertSet, cond: ImageCond, latents: torch.Tensor, name: str) -> None:
    cfg = experts.config
    want = (cfg.in_dim - cfg.out_dim,) + tuple(latents.shape[2:])
    _check_batched(cond.y, latents, want, "image conditioning")
    if cfg.has_clip:
        if cond.clip is None:
            raise InputError(f"this {name} model (Wan 2.1 image-to-video) also needs CLIP vision features of the "
                             f"start image: connect Wan CLIP Vision Encode to Wan Image To Video")
        tokens = cfg.flf_pos_len or 257
        if cond.clip.dim() != 3 or cond.clip.shape[1] != tokens or cond.clip.shape[0] not in (1, latents.shape[0]):
            what = "start and end image (514 tokens)" if cfg.flf_pos_len else "start image (257 tokens)"
            raise InputError(f"this {name} model needs CLIP features of the {what}; got {tuple(cond.clip.shape)}")


def _check_batched(t: torch.Tensor | None, latents: torch.Tensor, want: tuple, label: str) -> None:
    if t is None or t.dim() != 5 or tuple(t.shape[1:]) != want or t.shape[0] not in (1, latents.shape[0]):
        got = None if t is None else tuple(t.shape)
        raise InputError(f"the {label} {got} does not match the latent {tuple(latents.shape)}: expected "
                         f"[1 or {latents.shape[0]}, {', '.join(map(str, want))}]. Use the same width, height and "
                         f"frames for Wan Image To Video and the latent")
