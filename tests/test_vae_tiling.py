"""Spatial tiling of the Wan VAEs: tiled vs whole-frame results, seams, the out-of-memory fallback.

Tiles see less context than the whole frame, so tiled results are close to, not equal to, the full pass. With
random weights the per-frame attention of the middle block mixes every pixel of a frame; the error and seam tests
therefore zero its output projection (as the official initialisation does) and measure what the convolutions'
limited view costs. The tiling code is the same for both versions (only the stride differs), so the heavier
measurements run on the 2.1 layout. Numbers are printed (run with -s).
"""
from __future__ import annotations

import logging

import pytest
import torch

from test_vae_tiny import official_vae, random_video, save_pth

from wan.vae import WanVAE, load_vae
from wan.vae.tiling import TileGrid
from wan.vae.vae import OutOfMemoryError

LATENT_HW = (8, 12)
TILE, OVERLAP = 6, 2  # latent pixels: columns (0,6) (4,10) (6,12), rows (0,6) (2,8)


def _local_vae(version: str, folder) -> WanVAE:
    """A tiny VAE whose middle attention contributes a constant (proj.weight = 0)."""
    ref = official_vae(version, seed=3)
    with torch.no_grad():
        ref.decoder.middle[1].proj.weight.zero_()
        ref.encoder.middle[1].proj.weight.zero_()
    return load_vae(save_pth(ref, folder / f"vae{version}.pth"))


@pytest.fixture(scope="module")
def vae21(tmp_path_factory):
    return _local_vae("2.1", tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def decodes(vae21):
    """Whole-frame decode and tiled decodes with overlap 2 and 0 (hard cut) of the same one-frame latents."""
    s = vae21.stride[1]
    z = torch.randn(1, 16, 1, *LATENT_HW, generator=torch.Generator().manual_seed(4))
    out = {"full": vae21.decode(z, tiled="off", clamp=False)}
    for overlap in (OVERLAP, 0):
        out[overlap] = vae21.decode(z, tiled="on", tile_size=TILE * s, overlap=overlap * s, clamp=False)
    return out


def test_tiled_decode_error_is_bounded(decodes):
    """Tiled (6x6 latent tiles, overlap 2) vs whole-frame decode: mean error <= 3 % and max <= 30 % of the output
    range; without overlap the mean error is larger."""
    full, tiled = decodes["full"], decodes[OVERLAP]
    err = (tiled - full).abs()
    scale = full.abs().max().item()
    hard = (decodes[0] - full).abs().mean().item()
    print(f"\ntiled decode: max err {err.max():.4f}, mean {err.mean():.5f} (no overlap: {hard:.5f}), "
          f"output max {scale:.3f}")
    assert err.mean() <= 0.03 * scale and err.max() <= 0.3 * scale
    assert hard > err.mean().item()


def _step_errors(full: torch.Tensor, tiled: torch.Tensor, grid: TileGrid, s: int) -> list[tuple[float, float]]:
    """Per axis: (largest error of the pixel-to-pixel steps next to a tile edge, largest elsewhere)."""
    out = []
    for dim, length in ((-1, LATENT_HW[1]), (-2, LATENT_HW[0])):
        step_err = (tiled.diff(dim=dim) - full.diff(dim=dim)).abs().transpose(dim, -1).flatten(0, -2).amax(0)
        near = torch.zeros_like(step_err, dtype=torch.bool)
        for e in {e * s for a, b in grid.spans(length) for e in (a, b) if 0 < e < length}:
            near[max(0, e - 2):e + 1] = True
        out.append((step_err[near].max().item(), step_err[~near].max().item()))
    return out


def test_no_seam_at_tile_edges(vae21, decodes):
    """Seam check on the tiled output's pixel-to-pixel steps vs the full pass's: next to tile edges they deviate
    no more than elsewhere (ratio <= 1); hard-cut tiles (no overlap) show the seam (ratio >= 1.3x that)."""
    s = vae21.stride[1]
    blended = max(a / b for a, b in _step_errors(decodes["full"], decodes[OVERLAP], TileGrid(TILE, OVERLAP), s))
    hard = max(a / b for a, b in _step_errors(decodes["full"], decodes[0], TileGrid(TILE, 0), s))
    print(f"\nseam ratio (edge / elsewhere): blended {blended:.2f}, hard cut {hard:.2f}")
    assert blended <= 1.0 and hard >= 1.3 * blended


def test_tiled_encode_is_close(vae21):
    """Tiled encode (4x4 latent tiles, overlap 2, each through all 5 frames) of a 6x6-latent video vs the full
    pass: mean error <= 5 % of the latent range."""
    s = vae21.stride[1]
    video = torch.rand(1, 3, 5, 6 * s, 6 * s, generator=torch.Generator().manual_seed(5)) * 2 - 1
    full = vae21.encode(video, tiled="off")
    tiled = vae21.encode(video, tiled="on", tile_size=4 * s, overlap=2 * s)
    err = (tiled - full).abs()
    print(f"\ntiled encode: max err {err.max():.4f}, mean {err.mean():.5f}, latent max {full.abs().max():.3f}")
    assert tiled.shape == full.shape and err.mean() <= 0.05 * full.abs().max()


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_one_tile_equals_full_pass(version, tmp_path):
    """A tile as large as the frame is the full pass, bit for bit (encode and decode)."""
    vae = load_vae(save_pth(official_vae(version), tmp_path / "vae.pth"))
    s = vae.stride[1]
    video = random_video(version, 5)
    assert torch.equal(vae.encode(video, tiled="on", tile_size=64 * s), vae.encode(video, tiled="off"))
    z = torch.randn(1, vae.z_dim, 2, 2, 3)
    assert torch.equal(vae.decode(z, tiled="on", tile_size=64 * s), vae.decode(z, tiled="off"))


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_out_of_memory_falls_back_to_tiles(version, tmp_path, monkeypatch, caplog):
    """'auto' retries in tiles when the whole-frame pass raises torch.OutOfMemoryError; 'off' lets it through."""
    vae = load_vae(save_pth(official_vae(version), tmp_path / "vae.pth"))
    s, hw = vae.stride[1], (2, 4)
    z = torch.randn(1, vae.z_dim, 2, *hw)
    expected = vae.decode(z, tiled="on", tile_size=2 * s, overlap=0)
    real = vae.model.decode_chunks

    def fails_on_whole_frames(latents, on_chunk=None, **kwargs):
        if tuple(latents.shape[3:]) == hw:
            raise OutOfMemoryError("CUDA out of memory (simulated)")
        return real(latents, on_chunk, **kwargs)

    monkeypatch.setattr(vae.model, "decode_chunks", fails_on_whole_frames)
    calls = []
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        got = vae.decode(z, tile_size=2 * s, overlap=0, callback=lambda done, total: calls.append((done, total)))
    assert torch.equal(got, expected)
    assert "out of memory" in caplog.text and "tiles" in caplog.text
    assert calls[-1] == (4, 4)  # 2 tiles x 2 latent frames
    with pytest.raises(OutOfMemoryError):
        vae.decode(z, tiled="off")


def test_tile_spans_cover_every_pixel():
    grid = TileGrid.from_pixels(512, 64, 8)
    assert (grid.tile, grid.overlap) == (64, 8)
    for length in (1, 63, 64, 65, 90, 160, 257):
        covered = torch.zeros(length, dtype=torch.bool)
        for a, b in grid.spans(length):
            assert 0 <= a < b <= length and b - a == min(length, 64)
            covered[a:b] = True
        assert covered.all()
    assert TileGrid.from_pixels(64, 1000, 8).overlap == 4  # at most half a tile


def test_progress_counts_every_chunk_of_every_item_and_tile(vae21):
    """callback(done, total): encode 2 videos of 9 frames = 2 x 3 chunks; tiled decode = items x tiles x frames."""
    calls = []
    vae21.encode(random_video("2.1", 9, batch=2), callback=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]
    calls.clear()
    s = vae21.stride[1]
    vae21.decode(torch.zeros(1, 16, 2, 2, 4), tiled="on", tile_size=2 * s, overlap=0,
                 callback=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 4) for i in range(1, 5)]
