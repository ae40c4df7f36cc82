"""TI2V-5B start-image preprocessing equals the official one (wan22 ``textimage2video.WanTI2V.i2v``): scale the
8-bit image to cover the output size with PIL's Lanczos filter, centre-crop, then ``to_tensor`` and map to
[-1, 1]. Oracle: those official steps applied with PIL to the same pixels. Tolerance: 1e-6 (float rounding of
the [-1, 1] mapping only)."""
import pytest
import torch
from PIL import Image

from wan.sampling.imagecond import fit_image_ti2v


def official_preprocess(img: Image.Image, ow: int, oh: int) -> torch.Tensor:
    ih, iw = img.height, img.width
    scale = max(ow / iw, oh / ih)
    img = img.resize((round(iw * scale), round(ih * scale)), Image.LANCZOS)
    x1, y1 = (img.width - ow) // 2, (img.height - oh) // 2
    img = img.crop((x1, y1, x1 + ow, y1 + oh))
    pixels = torch.tensor(list(img.getdata()), dtype=torch.float32).view(oh, ow, 3).permute(2, 0, 1) / 255.0
    return pixels.sub(0.5).div(0.5)


@pytest.mark.parametrize("src,out", [((75, 53), (64, 32)), ((40, 90), (32, 64)), ((64, 64), (96, 64))])
def test_ti2v_resize_matches_official(src, out):
    w, h = src
    u8 = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(w * h))
    pil = Image.frombytes("RGB", (w, h), u8.numpy().tobytes())
    ours = fit_image_ti2v((u8.permute(2, 0, 1).float() / 127.5 - 1.0)[None], *out)
    ref = official_preprocess(pil, *out)
    assert ours.shape == (1, 3, out[1], out[0])
    assert (ours[0] - ref).abs().max() <= 1e-6


def test_image_at_the_target_size_is_kept_exactly():
    image = torch.rand(2, 3, 32, 64) * 2 - 1
    assert torch.equal(fit_image_ti2v(image, 64, 32), image)
