"""Save Wan Video writes playable files: checked by decoding them back with PyAV (an independent decoder path:
FFmpeg's demuxers and h264 / vp9 decoders), not with our own code."""
import importlib
import json
from fractions import Fraction
import os

import av
import numpy as np
import pytest
import torch


@pytest.fixture
def save_node(pack, models_dir):
    return importlib.import_module(pack.__name__ + ".nodes.video").WanExpertsSaveVideo()


def _frames(n=5, h=32, w=48):
    """A gradient that moves, so frames differ and decoded colours can be compared."""
    y = torch.linspace(0, 1, h).view(1, h, 1, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w, 1)
    t = torch.arange(n).view(n, 1, 1, 1) / max(n - 1, 1)
    return torch.cat([x.expand(n, h, w, 1), y.expand(n, h, w, 1), t.expand(n, h, w, 1)], dim=-1)


def _decode(path):
    with av.open(str(path)) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}  # matroska reads tag names upper-case
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        rate = container.streams.video[0].average_rate
    return np.stack(frames), tags, rate


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_save_video_decodes_back_with_metadata(save_node, fmt):
    prompt = {"1": {"class_type": "WanExpertsSaveVideo", "inputs": {"fps": 16}}}
    workflow = {"nodes": [{"id": 1, "type": "WanExpertsSaveVideo"}], "links": []}
    frames = _frames()
    out = save_node.save(frames, fps=16.0, filename_prefix="video/Wan", format=fmt, crf=10, prompt=prompt,
                         extra_pnginfo={"workflow": workflow})
    entry = out["ui"]["images"][0]
    assert out["result"] == () and out["ui"]["animated"] == (True,)
    assert entry == {"filename": f"Wan_00001_.{fmt}", "subfolder": "video", "type": "output"}
    path = os.path.join(os.environ["WAN_EXPERTS_OUTPUT"], "video", entry["filename"])
    decoded, tags, rate = _decode(path)
    assert decoded.shape == (5, 32, 48, 3)
    assert float(rate) == 16.0
    assert json.loads(tags["prompt"]) == prompt and json.loads(tags["workflow"]) == workflow
    err = np.abs(decoded.astype(np.float32) / 255 - frames.numpy()).mean()
    assert err < 0.03, f"decoded colours differ from the input by {err:.3f} on average"
    assert not [p for p in os.listdir(os.path.dirname(path)) if "partial" in p]


def test_counter_never_overwrites(save_node):
    out_dir = os.environ["WAN_EXPERTS_OUTPUT"]
    os.makedirs(out_dir)
    open(os.path.join(out_dir, "clip_00007_.mp4"), "wb").write(b"keep me")
    names = [save_node.save(_frames(2), filename_prefix="clip")["ui"]["images"][0]["filename"] for _ in range(2)]
    assert names == ["clip_00008_.mp4", "clip_00009_.mp4"]
    assert open(os.path.join(out_dir, "clip_00007_.mp4"), "rb").read() == b"keep me"


def test_odd_size_is_padded_to_even(save_node):
    out = save_node.save(_frames(3, h=17, w=33), filename_prefix="odd")
    decoded, _, _ = _decode(os.path.join(os.environ["WAN_EXPERTS_OUTPUT"], out["ui"]["images"][0]["filename"]))
    assert decoded.shape == (3, 18, 34, 3)


def test_output_folder_that_cannot_be_created_is_named(save_node):
    out_dir = os.environ["WAN_EXPERTS_OUTPUT"]
    os.makedirs(out_dir)
    open(os.path.join(out_dir, "video"), "w").close()  # a file where the subfolder should go
    with pytest.raises(OSError, match="output folder") as info:
        save_node.save(_frames(2), filename_prefix="video/Wan")
    assert os.path.join(out_dir, "video") in str(info.value)


def test_failed_write_leaves_nothing_behind(save_node, pack, monkeypatch):
    video = importlib.import_module(pack.__name__ + ".wan.video")

    def disk_full(pixels, path, *args):
        path.write_bytes(b"half a video")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video, "encode", disk_full)
    with pytest.raises(OSError, match="No space left") as info:
        save_node.save(_frames(2), filename_prefix="full")
    out_dir = os.environ["WAN_EXPERTS_OUTPUT"]
    assert out_dir in str(info.value)
    assert os.listdir(out_dir) == []


def test_bad_inputs_are_refused_before_writing(save_node):
    with pytest.raises(ValueError, match="images must be frames"):
        save_node.save(torch.zeros(4, 4, 3))
    with pytest.raises(ValueError, match="filename_prefix"):
        save_node.save(_frames(2), filename_prefix="../escape")
    with pytest.raises(ValueError, match="crf"):
        save_node.save(_frames(2), crf=60, format="mp4")
    assert not os.path.exists(os.environ["WAN_EXPERTS_OUTPUT"])


def test_write_video_to_exact_path_replaces_only_when_done(pack, tmp_path):
    video = importlib.import_module(pack.__name__ + ".wan.video")
    target = tmp_path / "sub" / "clip.mp4"
    video.write_video(_frames(3), target, fps=24, metadata={"comment": "first"})
    video.write_video(_frames(4), target, fps=24, metadata={"comment": "second"})
    decoded, tags, rate = _decode(target)
    assert decoded.shape[0] == 4 and tags["comment"] == "second" and float(rate) == 24
    with pytest.raises(ValueError, match="must end in .mp4 or .webm"):
        video.write_video(_frames(2), tmp_path / "clip.avi")
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.mp4"]


@pytest.mark.parametrize("fps", [0.0004, 1e-9])
def test_fps_the_container_cannot_store_is_refused(pack, tmp_path, fps):
    """A rate that rounds to 0 in the container would silently become the encoder's default (24 fps)."""
    video = importlib.import_module(pack.__name__ + ".wan.video")
    errors = importlib.import_module(pack.__name__ + ".wan.errors")
    with pytest.raises(errors.InputError, match=rf"fps {fps!r} is out of range: .* must be 0.001 or more"):
        video.save_video(_frames(2), tmp_path, "video/Wan", fps=fps)
    assert not any(tmp_path.rglob("*.mp4"))


def test_fps_between_steps_is_rounded_with_a_warning(pack, tmp_path, caplog):
    video = importlib.import_module(pack.__name__ + ".wan.video")
    with caplog.at_level("WARNING", logger="wan_experts"):
        saved = video.save_video(_frames(2), tmp_path, "video/Wan", fps=23.97602)
    assert any("fps 23.97602 is stored as 2997/125" in r.getMessage() for r in caplog.records)
    assert _decode(saved.path)[2] == Fraction(23976, 1000)
