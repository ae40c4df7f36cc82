"""The official VACE conditioning of Wan 2.1 (``wan/vace.py`` of Wan-Video/Wan2.1, Apache-2.0: ``WanVace``'s
``vace_encode_frames``, ``vace_encode_masks``, ``vace_latent``, the reference-image fitting of ``prepare_source`` and
the reference cut of ``decode_latent``), reproduced statement for statement as a test oracle: the Wan 2.1 repository
is not on PyPI, and its module imports CUDA-only code at import time. ``OfficialVAE`` is the wheel's
``Wan2_1_VAE.encode`` / ``decode`` (a list of videos, each through the inner ``WanVAE_`` with [mean, 1/std])."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wan.latents import STATS


class OfficialVAE:
    def __init__(self, model):
        mean, std = STATS[16]
        self.model = model
        self.scale = [torch.tensor(mean), 1.0 / torch.tensor(std)]

    def encode(self, videos):
        with torch.no_grad():
            return [self.model.encode(u.unsqueeze(0), self.scale).float().squeeze(0) for u in videos]

    def decode(self, zs):
        with torch.no_grad():
            return [self.model.decode(u.unsqueeze(0), self.scale).float().clamp_(-1, 1).squeeze(0) for u in zs]


def vace_encode_frames(vae, frames, ref_images, masks=None):
    if ref_images is None:
        ref_images = [None] * len(frames)
    else:
        assert len(frames) == len(ref_images)

    if masks is None:
        latents = vae.encode(frames)
    else:
        masks = [torch.where(m > 0.5, 1.0, 0.0) for m in masks]
        inactive = [i * (1 - m) + 0 * m for i, m in zip(frames, masks)]
        reactive = [i * m + 0 * (1 - m) for i, m in zip(frames, masks)]
        inactive = vae.encode(inactive)
        reactive = vae.encode(reactive)
        latents = [torch.cat((u, c), dim=0) for u, c in zip(inactive, reactive)]

    cat_latents = []
    for latent, refs in zip(latents, ref_images):
        if refs is not None:
            if masks is None:
                ref_latent = vae.encode(refs)
            else:
                ref_latent = vae.encode(refs)
                ref_latent = [torch.cat((u, torch.zeros_like(u)), dim=0) for u in ref_latent]
            assert all([x.shape[1] == 1 for x in ref_latent])
            latent = torch.cat([*ref_latent, latent], dim=1)
        cat_latents.append(latent)
    return cat_latents


def vace_encode_masks(masks, ref_images=None, vae_stride=(4, 8, 8)):
    if ref_images is None:
        ref_images = [None] * len(masks)
    else:
        assert len(masks) == len(ref_images)

    result_masks = []
    for mask, refs in zip(masks, ref_images):
        c, depth, height, width = mask.shape
        new_depth = int((depth + 3) // vae_stride[0])
        height = 2 * (int(height) // (vae_stride[1] * 2))
        width = 2 * (int(width) // (vae_stride[2] * 2))

        # reshape
        mask = mask[0, :, :, :]
        mask = mask.view(depth, height, vae_stride[1], width, vae_stride[1])  # depth, height, 8, width, 8
        mask = mask.permute(2, 4, 0, 1, 3)  # 8, 8, depth, height, width
        mask = mask.reshape(vae_stride[1] * vae_stride[2], depth, height, width)  # 8*8, depth, height, width

        # interpolation
        mask = F.interpolate(mask.unsqueeze(0), size=(new_depth, height, width), mode='nearest-exact').squeeze(0)

        if refs is not None:
            length = len(refs)
            mask_pad = torch.zeros_like(mask[:, :length, :, :])
            mask = torch.cat((mask_pad, mask), dim=1)
        result_masks.append(mask)
    return result_masks


def vace_latent(z, m):
    return [torch.cat([zz, mm], dim=0) for zz, mm in zip(z, m)]


def fit_reference(ref_img, image_size):
    """``prepare_source`` for one reference image [3, 1, h, w] in [-1, 1]; ``image_size`` (height, width)."""
    if ref_img.shape[-2:] != image_size:
        canvas_height, canvas_width = image_size
        ref_height, ref_width = ref_img.shape[-2:]
        white_canvas = torch.ones((3, 1, canvas_height, canvas_width))  # [-1, 1]
        scale = min(canvas_height / ref_height, canvas_width / ref_width)
        new_height = int(ref_height * scale)
        new_width = int(ref_width * scale)
        resized_image = F.interpolate(ref_img.squeeze(1).unsqueeze(0), size=(new_height, new_width),
                                      mode='bilinear', align_corners=False).squeeze(0).unsqueeze(1)
        top = (canvas_height - new_height) // 2
        left = (canvas_width - new_width) // 2
        white_canvas[:, :, top:top + new_height, left:left + new_width] = resized_image
        ref_img = white_canvas
    return ref_img


def decode_latent(vae, zs, ref_images=None):
    if ref_images is None:
        ref_images = [None] * len(zs)
    else:
        assert len(zs) == len(ref_images)
    trimed_zs = []
    for z, refs in zip(zs, ref_images):
        if refs is not None:
            z = z[:, len(refs):, :, :]
        trimed_zs.append(z)
    return vae.decode(trimed_zs)


@torch.no_grad()
def generate_latents(model, vae, context, context_null, input_frames, input_masks, input_ref_images, scheduler,
                     guide_scale=5.0, context_scale=1.0, seed=0, models=None, boundary=None, guides=None):
    """``WanVace.generate`` from the VACE context to the sampled latent (before ``decode_latent``), on the CPU:
    the VACE encodes, the noise of the seed over the reference and video frames, cond then uncond forward with the
    same VACE context, guidance and the scheduler step. ``models`` / ``boundary`` / ``guides`` (low, high): the Wan
    2.2 expert switch of the official A14B loops (``t >= boundary * 1000`` -> high), for the VACE-Fun pair."""
    z0 = vace_encode_frames(vae, input_frames, input_ref_images, masks=input_masks)
    m0 = vace_encode_masks(input_masks, input_ref_images)
    z = vace_latent(z0, m0)

    target_shape = list(z0[0].shape)
    target_shape[0] = int(target_shape[0] / 2)
    seed_g = torch.Generator(device="cpu")
    seed_g.manual_seed(seed)
    noise = [torch.randn(target_shape[0], target_shape[1], target_shape[2], target_shape[3], dtype=torch.float32,
                         generator=seed_g)]
    seq_len = math.ceil((target_shape[2] * target_shape[3]) / (2 * 2) * target_shape[1])

    latents = noise
    arg_c = {'context': context, 'seq_len': seq_len}
    arg_null = {'context': context_null, 'seq_len': seq_len}
    for t in scheduler.timesteps:
        scale, net = guide_scale, model
        if boundary is not None:
            high = t.item() >= boundary * 1000
            net, scale = models["high" if high else "low"], guides[1] if high else guides[0]
        timestep = torch.stack([t])
        noise_pred_cond = net(latents, t=timestep, vace_context=z, vace_context_scale=context_scale, **arg_c)[0]
        noise_pred_uncond = net(latents, t=timestep, vace_context=z, vace_context_scale=context_scale,
                                **arg_null)[0]
        noise_pred = noise_pred_uncond + scale * (noise_pred_cond - noise_pred_uncond)
        temp_x0 = scheduler.step(noise_pred.unsqueeze(0), t, latents[0].unsqueeze(0), return_dict=False,
                                 generator=seed_g)[0]
        latents = [temp_x0.squeeze(0)]
    return latents[0]
