"""Context-window layouts and blend weights (wan/sampling/windows.py), checked by plain counting.

Oracles: hand-written window lists for small cases; for every schedule, fuse and length of 5...401 pixel frames the
per-frame sums of the normalised weights computed here by plain loops (must be 1 within float32 rounding, and
exactly 1 on frames a single window covers); FreeNoise checked frame by frame against the rule it implements.
"""
import pytest
import torch

from wan.errors import InputError
from wan.sampling.windows import (FUSES, SCHEDULES, ContextWindows, blend_weights, context_windows, freenoise,
                                  ordered_halving, prompt_index)


def latent(frames: int) -> int:
    return (frames - 1) // 4 + 1


def test_pixel_frames_convert_like_comfyui_core():
    """Core WanContextWindowsManual: length (n-1)//4+1; overlap (o-1)//4+1, i.e. ceil(o/4), 0 stays 0."""
    c = ContextWindows(81, 16)
    assert (c.size, c.overlap) == (21, 4)
    assert ContextWindows(81, 30).overlap == 8 and ContextWindows(81, 0).overlap == 0
    assert ContextWindows(5, 3).overlap == 1 and ContextWindows(9, 8).overlap == 2


def test_ordered_halving_is_the_bit_reversed_fraction():
    assert [ordered_halving(i) for i in range(8)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]


def test_static_windows_by_hand():
    assert context_windows(8, 4, 0, "static") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # 61 latent frames (241 pixel frames), windows of 21 with overlap >= 4: 4 windows spread evenly
    starts = [w[0] for w in context_windows(61, 21, 4, "static")]
    assert starts == [0, 13, 27, 40]
    assert context_windows(5, 21, 4, "static", 3) == [[0, 1, 2, 3, 4]]  # shorter than a window: one window


def test_uniform_windows_move_with_the_step():
    """Offset int(stride * halving(step)): stride 17 -> 0, 8, 4, 12; the first window starts at 0, the last ends at
    the last frame."""
    firsts = [[w[0] for w in context_windows(61, 21, 4, "uniform_standard", step)] for step in range(4)]
    assert firsts == [[0, 17, 34, 40], [0, 8, 25, 40], [0, 4, 21, 38, 40], [0, 12, 29, 40]]
    looped = context_windows(61, 21, 4, "uniform_looped", 1)
    assert [w[0] for w in looped] == [8, 25, 42, 59]
    assert looped[2][-1] == 1 and looped[3][:3] == [59, 60, 0]  # wrapped around the end


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_weights_sum_to_one_on_every_frame(schedule):
    """Property over 5...401 pixel frames, windows of 17/33/81 frames, overlaps 0...32, four steps, both fuses:
    every frame covered (no black frames in looped schedules), weights sum to 1, exactly 1 under one window."""
    checked = 0
    for frames in range(5, 402, 4):
        length = latent(frames)
        for size_px, overlap_px in ((17, 4), (33, 16), (81, 16), (81, 32), (81, 0)):
            c = ContextWindows(size_px, overlap_px, schedule)
            for step in (0, 1, 2, 5):
                windows = context_windows(length, c.size, c.overlap, schedule, step)
                assert all(len(w) == min(c.size, length) == len(set(w)) for w in windows)
                for fuse in FUSES:
                    weights = blend_weights(windows, length, c.overlap, fuse)
                    total, count = [0.0] * length, [0] * length
                    for w, wt in zip(windows, weights):
                        for f, value in zip(w, wt.tolist()):
                            total[f] += value
                            count[f] += 1
                    assert min(count) >= 1, (frames, size_px, overlap_px, step)
                    assert max(abs(t - 1.0) for t in total) <= 1e-6
                    assert all(t == 1.0 for t, n in zip(total, count) if n == 1)
                    checked += 1
    assert checked > 3000


def test_linear_ramps_only_on_edges_that_meet_another_window():
    assert [w[0] for w in context_windows(12, 6, 2, "static")] == [0, 3, 6]  # 3 windows, overlaps of 3
    weights = blend_weights([[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9]], 10, 2, "linear")
    # window 0: flat at the video start, ramps down (2/3, 1/3) into window 1, which ramps up (1/3, 2/3)
    assert weights[0].tolist() == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])
    assert weights[1].tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    pyramid = blend_weights([[0, 1, 2, 3]], 4, 0, "pyramid")[0]
    assert pyramid.tolist() == [1.0, 1.0, 1.0, 1.0]  # a single window: exactly 1 everywhere


def test_freenoise_repeats_shuffled_earlier_noise():
    """Frames < L untouched; each stride chunk from L on is a permutation of the frames L earlier."""
    noise = torch.randn(1, 2, 23, 2, 2)
    size, overlap = 6, 2
    out = freenoise(noise, size, overlap)
    assert torch.equal(out[:, :, :size], noise[:, :, :size])
    for start in range(size, 23, size - overlap):
        n = min(size - overlap, 23 - start)
        chunk = {tuple(out[0, :, f].flatten().tolist()) for f in range(start, start + n)}
        source = {tuple(out[0, :, f].flatten().tolist()) for f in range(start - size, start - size + n)}
        assert chunk == source
    assert not torch.equal(out, noise)
    assert torch.equal(freenoise(noise[:, :, :5], size, overlap), noise[:, :, :5])  # shorter than a window


def test_prompts_spread_over_the_video_in_order():
    windows = context_windows(61, 21, 4, "static")
    assert [prompt_index(w, 61, 3) for w in windows] == [0, 1, 1, 2]
    assert [prompt_index(w, 61, 1) for w in windows] == [0, 0, 0, 0]


@pytest.mark.parametrize("kwargs,needle", [
    ({"context_frames": 80}, r"4n\+1"), ({"context_frames": 1}, "at least 5"),
    ({"context_overlap": 81}, "less than context_frames"), ({"schedule": "loop"}, "schedule"),
    ({"fuse": "flat"}, "fuse"), ({"image_cond": "none"}, "image_cond"),
    ({"prompts": torch.zeros(4, 32)}, "prompts")])
def test_bad_settings_are_named(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        ContextWindows(**kwargs)
