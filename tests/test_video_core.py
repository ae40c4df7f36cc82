"""Video toward core ComfyUI: Wan Create Video's VIDEO carries the frames and frame rate exactly (core's
``VideoFromComponents`` inside ComfyUI, the stand-in outside), and Save Wan Video stores no graph in the file when
ComfyUI runs with --disable-metadata (read back with PyAV).

Core's layouts, as read from ComfyUI: ``comfy_api/latest/_util/video_types.py`` (``VideoComponents``: images,
frame_rate as a ``Fraction``, audio, metadata), ``comfy_api/latest/_input_impl/video_types.py``
(``VideoFromComponents(components)``, ``get_components()``), ``comfy_api/latest/__init__.py`` (exported as
``InputImpl.VideoFromComponents`` / ``Types.VideoComponents``), ``comfy_extras/nodes_video.py`` (Create Video:
``Fraction(fps)``), ``comfy/cli_args.py`` (``args.disable_metadata``)."""
import importlib
import json
import os
import sys
import types
from dataclasses import dataclass
from fractions import Fraction

import av
import pytest
import torch


@pytest.fixture
def video_nodes(pack, models_dir):
    return importlib.import_module(pack.__name__ + ".nodes.video")


@pytest.fixture
def host(pack):
    return importlib.import_module(pack.__name__ + ".nodes.host")


def _frames(n=5, h=16, w=24, channels=3):
    return torch.rand(n, h, w, channels, generator=torch.Generator().manual_seed(n))


@dataclass
class CoreVideoComponents:  # the fields of core's VideoComponents
    images: torch.Tensor
    frame_rate: Fraction
    audio: dict | None = None
    metadata: dict | None = None


class CoreVideoFromComponents:  # core's constructor and accessor
    def __init__(self, components):
        self.components = components

    def get_components(self):
        return self.components


@pytest.fixture
def in_comfy(host, monkeypatch):
    """The host as inside ComfyUI, with core's video API and command-line arguments as modules."""
    latest = types.ModuleType("comfy_api.latest")
    latest.InputImpl = types.SimpleNamespace(VideoFromComponents=CoreVideoFromComponents)
    latest.Types = types.SimpleNamespace(VideoComponents=CoreVideoComponents)
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(disable_metadata=False)
    for name, module in {"comfy_api": types.ModuleType("comfy_api"), "comfy_api.latest": latest,
                         "comfy": types.ModuleType("comfy"), "comfy.cli_args": cli_args}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(host, "IN_COMFY", True)
    return cli_args.args


@pytest.mark.parametrize("fps", [16.0, 24.0, 23.976])
def test_create_video_carries_frames_and_fps_exactly(video_nodes, fps):
    frames = _frames()
    video, = video_nodes.WanExpertsCreateVideo().create(frames, fps)
    parts = video.get_components()
    assert torch.equal(parts.images, frames) and parts.audio is None
    assert isinstance(parts.frame_rate, Fraction) and parts.frame_rate == Fraction(fps)
    assert float(parts.frame_rate) == fps
    assert video.get_dimensions() == (24, 16) and video.get_duration() == pytest.approx(5 / fps)


def test_create_video_uses_core_video_api_inside_comfyui(video_nodes, in_comfy):
    frames = _frames(channels=4)  # an alpha channel is dropped: core's VIDEO holds RGB frames
    video, = video_nodes.WanExpertsCreateVideo().create(frames, 24.0)
    assert isinstance(video, CoreVideoFromComponents)
    parts = video.get_components()
    assert isinstance(parts, CoreVideoComponents) and parts.frame_rate == Fraction(24)
    assert torch.equal(parts.images, frames[..., :3]) and parts.audio is None


def test_standalone_video_saves_an_mp4(video_nodes, tmp_path):
    video, = video_nodes.WanExpertsCreateVideo().create(_frames(4), 16.0)
    video.save_to(tmp_path / "clip.mp4", metadata={"note": {"a": 1}})
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
        assert float(container.streams.video[0].average_rate) == 16.0
        assert json.loads(container.metadata["note"]) == {"a": 1}


@pytest.mark.parametrize("images, fps, match", [(torch.rand(16, 24, 3), 16.0, "frames \\[N, H, W, 3\\]"),
                                                (torch.rand(0, 16, 24, 3), 16.0, "at least one frame"),
                                                (torch.rand(2, 16, 24, 3), 0.0, "fps 0.0")])
def test_create_video_refuses_bad_input(video_nodes, images, fps, match):
    with pytest.raises(ValueError, match=match):
        video_nodes.WanExpertsCreateVideo().create(images, fps)


def _saved_tags(video_nodes, fmt):
    prompt = {"1": {"class_type": "WanExpertsSaveVideo", "inputs": {"fps": 16}}}
    out = video_nodes.WanExpertsSaveVideo().save(_frames(3), fps=16.0, filename_prefix="meta", format=fmt,
                                                 prompt=prompt, extra_pnginfo={"workflow": {"nodes": [], "x": 1}})
    path = os.path.join(os.environ["WAN_EXPERTS_OUTPUT"], out["ui"]["images"][0]["filename"])
    with av.open(path) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}
        tags.update({k.lower(): v for s in container.streams for k, v in s.metadata.items()})
        assert sum(1 for _ in container.decode(video=0)) == 3
    return tags


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_disable_metadata_leaves_no_graph_in_the_file(video_nodes, monkeypatch, fmt):
    assert {"prompt", "workflow"} <= set(_saved_tags(video_nodes, fmt))  # stored by default
    monkeypatch.setenv("WAN_EXPERTS_DISABLE_METADATA", "1")
    tags = _saved_tags(video_nodes, fmt)
    assert not {"prompt", "workflow"} & set(tags)
    assert not [v for v in tags.values() if "WanExpertsSaveVideo" in v or "nodes" in v], tags


def test_disable_metadata_follows_comfyui_args(host, in_comfy, monkeypatch):
    monkeypatch.setenv("WAN_EXPERTS_DISABLE_METADATA", "1")  # ignored inside ComfyUI: its own flag decides
    assert host.metadata_disabled() is False
    in_comfy.disable_metadata = True
    assert host.metadata_disabled() is True
