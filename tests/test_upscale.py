"""Pixel-space upscaling (wan/upscale.py). Oracle: Pillow's ``Image.resize`` with BOX / BICUBIC / LANCZOS: the
weights of each axis against its float mode "F" (per channel, one axis resized, no 8-bit rounding; tolerance 1e-4
of the 0..255 range), both axes against 8-bit RGB images (within one 8-bit level). Memory: the live tensors of a
long upscale (tests/meta_trace.LiveTensors, on CPU and at full size on the meta device) above the output itself stay
within one output frame batch, whatever the frame count."""
import numpy as np
import pytest
import torch

from meta_trace import LiveTensors
from wan.errors import InputError
from wan.upscale import RESAMPLING, resize_frames, target_size

PIL_FILTERS = {"area": "BOX", "bicubic": "BICUBIC", "lanczos": "LANCZOS"}
SIZES = [((40, 24), (96, 24)), ((40, 24), (40, 60)), ((96, 64), (48, 64)), ((50, 30), (50, 17)), ((50, 30), (33, 30))]


def frames(n=2, h=24, w=40, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", RESAMPLING)
@pytest.mark.parametrize("src,dst", SIZES)
def test_matches_pillow_float_mode(method, src, dst):
    from PIL import Image

    x = frames(1, src[1], src[0])
    ours = resize_frames(x, *dst, method=method)[0].numpy() * 255
    flt = getattr(Image.Resampling, PIL_FILTERS[method])
    for c in range(3):
        plane = Image.fromarray(x[0, :, :, c].numpy().astype(np.float32) * 255, mode="F")
        ref = np.asarray(plane.resize(dst, flt))
        assert np.abs(np.clip(ref, 0, 255) - ours[..., c]).max() <= 1e-4 * 255


@pytest.mark.parametrize("method", RESAMPLING)
def test_within_one_level_of_pillow_8bit(method):
    from PIL import Image

    x = (frames(1, 48, 80, seed=4) * 255).round() / 255
    ours = (resize_frames(x, 128, 64, method=method)[0] * 255).round().numpy()
    image = Image.fromarray((x[0].numpy() * 255).round().astype(np.uint8))
    ref = np.asarray(image.resize((128, 64), getattr(Image.Resampling, PIL_FILTERS[method]))).astype(np.float32)
    assert np.abs(ref - ours).max() <= 1


def test_target_sizes_are_multiples_and_bad_targets_are_refused():
    assert target_size(832, 480, factor=1.5) == (1248, 720)
    assert target_size(1248, 720, factor=1.5) == (1872, 1088)
    assert target_size(1280, 704, factor=1.5, multiple=32) == (1920, 1056)
    assert target_size(100, 100, factor=0.01) == (16, 16)
    for w, h, m in ((832, 480, 16), (1280, 704, 32), (852, 479, 16)):
        out = target_size(w, h, factor=1.37, multiple=m)
        assert out[0] % m == 0 and out[1] % m == 0
    assert target_size(0, 0, size=(1920, 1088)) == (1920, 1088)
    with pytest.raises(InputError, match=r"upscale target 1920x1080: height 1080 is not a multiple of 16.*1072 or "
                                         r"1088"):
        target_size(0, 0, size=(1920, 1080))
    with pytest.raises(InputError, match="multiple of 32"):
        target_size(0, 0, size=(1280, 720), multiple=32)
    for bad in (float("nan"), 0.0, -1.0, 100.0):
        with pytest.raises(InputError, match="factor"):
            target_size(832, 480, factor=bad)
    with pytest.raises(InputError, match="multiple 24"):
        target_size(832, 480, factor=1.5, multiple=24)
    with pytest.raises(InputError, match="resampling 'nearest'"):
        resize_frames(frames(), 64, 48, method="nearest")


def peak_above_output(n: int, batch: int) -> tuple[int, int]:
    x = frames(n, 24, 40)
    with LiveTensors() as live:
        out = resize_frames(x, 64, 48, method="lanczos", frame_batch=batch)
        peak = live.peak
    return peak - out.untyped_storage().nbytes(), out[:batch].numel() * 4


def test_peak_memory_grows_by_at_most_one_output_frame_batch():
    """121 frames: the working memory above input and output is at most one output frame batch (8 frames), and the
    same as for 9 frames (nothing grows with the video's length)."""
    long, batch_bytes = peak_above_output(121, 8)
    short, _ = peak_above_output(9, 8)
    assert 0 < long <= batch_bytes, (long, batch_bytes)
    assert long == short


def test_121_frames_720p_to_1080p_hold_one_output_batch_at_most():
    """The real size on the meta device (shapes only, nothing computed): 121 frames 1248x720 -> 1872x1088."""
    x = torch.empty(121, 720, 1248, 3, device="meta")
    with LiveTensors() as live:
        out = resize_frames(x, 1872, 1088, method="lanczos", frame_batch=8)
        peak = live.peak
    batch_bytes = 8 * 1088 * 1872 * 3 * 4
    assert peak - out.untyped_storage().nbytes() <= batch_bytes, (peak, batch_bytes)
