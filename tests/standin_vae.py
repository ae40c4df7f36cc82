"""A stand-in video autoencoder with the Wan 2.1 VAE's interface and shapes, for the clip-loop tests against the
official pipelines (the real VAE, parity-tested on its own, costs minutes per clip on this CPU), and the official
pipelines' list interface over it."""
from __future__ import annotations

import torch


class PoolVAE:
    """Stand-in autoencoder with the Wan 2.1 VAE's interface and shapes (raw = normalised latents here)."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.enc, self.dec = torch.randn(16, 3, generator=g), torch.randn(3, 16, generator=g) * 0.3

    normalize = denormalize = staticmethod(lambda z: z)

    def encode(self, video, output_device=None):
        """[1, 3, F, H, W] -> [1, 16, 1 + (F - 1) // 4, H / 8, W / 8]: the first frame, then groups of 4."""
        first, rest = video[:, :, :1], video[:, :, 1:]
        groups = rest.unflatten(2, (rest.shape[2] // 4, 4)).mean(3)
        pooled = torch.nn.functional.avg_pool3d(torch.cat([first, groups], dim=2), (1, 8, 8))
        return torch.einsum("oc,bcthw->bothw", self.enc, pooled)

    def decode(self, latents, output_device=None):
        x = torch.tanh(torch.einsum("oc,bcthw->bothw", self.dec, latents))
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        return x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)


class VaeAdapter:
    """Our VAE behind the official list interface (normalised latents), recording what the loop decodes."""

    def __init__(self, vae):
        self.vae, self.decoded, self.dtype, self.device = vae, [], torch.float32, torch.device("cpu")

    def encode(self, videos):
        return [self.vae.normalize(self.vae.encode(v[None].float()))[0] for v in videos]

    def decode(self, zs):
        self.decoded.append(torch.stack(list(zs)).clone())
        return [self.vae.decode(self.vae.denormalize(z[None]))[0] for z in zs]
