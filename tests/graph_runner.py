"""A small test-only executor for API-format graphs, standing in for ComfyUI's ``execution.py``.

API format: ``{node_id: {"class_type": str, "inputs": {name: value}}}`` where a value is a literal (widget value)
or a link ``[source_node_id, output_slot]``. Like ComfyUI, the runner resolves ``class_type`` through
``NODE_CLASS_MAPPINGS``, first calls every node's ``VALIDATE_INPUTS`` (ComfyUI's custom validation, before anything
runs: the widget values of the inputs it names, None for a linked one; anything but True refuses the graph), then
runs nodes in dependency order inside ``torch.inference_mode()``, calls
``getattr(cls(), cls.FUNCTION)(**inputs)``, fills hidden inputs (``PROMPT`` = the graph, ``EXTRA_PNGINFO`` =
``{"workflow": ...}``, ``UNIQUE_ID`` = the node id), and takes a returned ``{"ui": ..., "result": ...}`` dict
apart. Core nodes the example workflows use on purpose (``LoadImage``, ``LoadAudio``, ``LoadVideo``,
``GetVideoComponents``, ``ImageToMask``) get minimal stand-ins here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


class GraphError(ValueError):
    """The graph cannot run: unknown node type, missing input, bad link, cycle."""


class GraphValidationError(GraphError):
    """A node's ``VALIDATE_INPUTS`` refused its inputs (the message is the node's own)."""


@dataclass
class GraphResult:
    outputs: dict[str, tuple] = field(default_factory=dict)  # node id -> output tuple
    ui: dict[str, dict] = field(default_factory=dict)  # node id -> "ui" dict of output nodes
    order: list[str] = field(default_factory=list)


class LoadImage:
    """Stand-in for core ComfyUI ``LoadImage``: an image from the input folder -> IMAGE [1, H, W, 3], MASK."""

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    input_dir = Path(os.environ.get("WAN_EXPERTS_INPUT", "input"))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ([], {"image_upload": True})}}

    def load_image(self, image):
        from PIL import Image

        with Image.open(self.input_dir / image) as img:
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(rgba[..., :3]).unsqueeze(0)
        return pixels, 1.0 - torch.from_numpy(rgba[..., 3]).unsqueeze(0)


class LoadAudio:
    """Stand-in for core ComfyUI ``LoadAudio``: an audio file from the input folder -> AUDIO."""

    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ([], {"audio_upload": True})}}

    def load(self, audio):
        from wan.runner.s2v import load_audio

        return (load_audio(LoadImage.input_dir / audio),)


class VideoFile:
    """Stand-in for core's ``VideoFromFile``: ``get_components()`` decodes every frame (no frame-rate change)."""

    def __init__(self, path: Path):
        self.path = path

    def get_components(self):
        from types import SimpleNamespace

        import av

        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            rate = stream.average_rate
        images = torch.from_numpy(np.stack(frames)).float() / 255.0
        return SimpleNamespace(images=images, audio=None, frame_rate=rate)


class LoadVideo:
    """Stand-in for core ComfyUI ``LoadVideo``: a video file from the input folder -> VIDEO."""

    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ([], {"video_upload": True})}}

    def load(self, file):
        return (VideoFile(LoadImage.input_dir / file),)


class GetVideoComponents:
    """Stand-in for core ComfyUI ``GetVideoComponents``: VIDEO -> frames IMAGE [N, H, W, 3], AUDIO, fps."""

    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",)}}

    def split(self, video):
        parts = video.get_components()
        return parts.images, parts.audio, float(parts.frame_rate)


class ImageScale:
    """Stand-in for core ``ImageScale`` (Upscale Image): resize to width x height, optionally cropping the centre to
    the target aspect first."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {}), "upscale_method": (["nearest-exact", "bilinear", "area",
                                                                          "bicubic", "lanczos"], {}),
                             "width": ("INT", {"default": 512}), "height": ("INT", {"default": 512}),
                             "crop": (["disabled", "center"], {})}}

    def upscale(self, image, upscale_method, width, height, crop):
        x = image.movedim(-1, 1)
        h, w = x.shape[-2:]
        if crop == "center" and w * height != h * width:
            if w * height > h * width:
                cw = round(h * width / height)
                x = x[..., :, (w - cw) // 2:(w - cw) // 2 + cw]
            else:
                ch = round(w * height / width)
                x = x[..., (h - ch) // 2:(h - ch) // 2 + ch, :]
        mode = "bilinear" if upscale_method in ("bilinear", "lanczos") else upscale_method
        return (torch.nn.functional.interpolate(x, size=(height, width), mode=mode).movedim(1, -1).clamp(0, 1),)


class ImageFromBatch:
    """Stand-in for core ``ImageFromBatch``: ``length`` images from ``batch_index``."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {}), "batch_index": ("INT", {"default": 0}),
                             "length": ("INT", {"default": 1})}}

    def frombatch(self, image, batch_index, length):
        start = min(batch_index, image.shape[0] - 1)
        return (image[start:start + length].clone(),)


class ImageToMask:
    """Stand-in for core ``ImageToMask`` (Convert Image to Mask): one channel of IMAGE -> MASK."""

    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {}), "channel": (["red", "green", "blue", "alpha"], {})}}

    def image_to_mask(self, image, channel):
        return (image[..., ["red", "green", "blue", "alpha"].index(channel)],)


CORE_STAND_INS = {"LoadImage": LoadImage, "LoadAudio": LoadAudio, "LoadVideo": LoadVideo,
                  "GetVideoComponents": GetVideoComponents, "ImageScale": ImageScale, "ImageFromBatch": ImageFromBatch,
                  "ImageToMask": ImageToMask}


def all_node_classes(pack) -> dict:
    """The pack's ``NODE_CLASS_MAPPINGS`` plus the ``NODES`` of every ``nodes/<module>.py`` (also the ones not
    registered in ``nodes/__init__.py`` yet)."""
    import importlib
    import pkgutil

    nodes_pkg = importlib.import_module(pack.__name__ + ".nodes")
    classes = dict(pack.NODE_CLASS_MAPPINGS)
    for info in pkgutil.iter_modules(nodes_pkg.__path__):
        module = importlib.import_module(f"{nodes_pkg.__name__}.{info.name}")
        classes.update(getattr(module, "NODES", {}))
    return classes


def run_graph(graph: dict, mappings: dict, workflow: dict | None = None, input_dir=None) -> GraphResult:
    """Run every node of ``graph``; ``workflow`` (UI format) is passed as ``extra_pnginfo["workflow"]``."""
    classes = {**CORE_STAND_INS, **mappings}
    for node_id, node in graph.items():
        if node.get("class_type") not in classes:
            raise GraphError(f"node {node_id}: unknown class_type '{node.get('class_type')}'")
    if input_dir is not None:
        LoadImage.input_dir = Path(input_dir)
    hidden_values = {"PROMPT": graph, "EXTRA_PNGINFO": {"workflow": workflow} if workflow is not None else None}
    result = GraphResult(order=topological_order(graph))
    validate_graph(graph, classes)
    with torch.inference_mode():
        for node_id in result.order:
            cls = classes[graph[node_id]["class_type"]]
            kwargs = _node_inputs(node_id, graph[node_id], cls, result.outputs)
            kwargs.update(_hidden_inputs(cls, node_id, hidden_values))
            _store(result, node_id, cls, getattr(cls(), cls.FUNCTION)(**kwargs))
    return result


def validate_graph(graph: dict, classes: dict) -> None:
    """Every node's ``VALIDATE_INPUTS``, as ComfyUI calls it while validating a prompt."""
    import inspect

    for node_id in sorted(graph, key=_id_key):
        check = getattr(classes[graph[node_id]["class_type"]], "VALIDATE_INPUTS", None)
        if check is None:
            continue
        names = inspect.signature(check).parameters
        values = {k: None if is_link(v) else v for k, v in graph[node_id].get("inputs", {}).items() if k in names}
        verdict = check(**values)
        if verdict is not True:
            raise GraphValidationError(f"node {node_id} ({graph[node_id]['class_type']}): {verdict}")


def topological_order(graph: dict) -> list[str]:
    """Node ids so that every node comes after the nodes it takes inputs from (stable by id otherwise)."""
    deps = {nid: {v[0] for v in node.get("inputs", {}).values() if is_link(v)} for nid, node in graph.items()}
    for nid, sources in deps.items():
        missing = sources - set(graph)
        if missing:
            raise GraphError(f"node {nid} takes input from node(s) {sorted(missing)}, which the graph lacks")
    order, done = [], set()
    while len(order) < len(graph):
        ready = sorted((n for n in graph if n not in done and deps[n] <= done), key=_id_key)
        if not ready:
            raise GraphError(f"the graph has a cycle among nodes {sorted(set(graph) - done, key=_id_key)}")
        order.extend(ready)
        done.update(ready)
    return order


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _node_inputs(node_id: str, node: dict, cls, outputs: dict) -> dict:
    declared = cls.INPUT_TYPES()
    known = {**declared.get("required", {}), **declared.get("optional", {})}
    missing = [name for name in declared.get("required", {}) if name not in node.get("inputs", {})]
    if missing:
        raise GraphError(f"node {node_id} ({node['class_type']}): required input(s) {missing} missing")
    kwargs = {}
    for name, value in node.get("inputs", {}).items():
        if name not in known:
            raise GraphError(f"node {node_id} ({node['class_type']}): unknown input '{name}'")
        if is_link(value):
            source, slot = value
            if slot >= len(outputs[source]):
                raise GraphError(f"node {node_id}.{name} links to output {slot} of node {source}, which has "
                                 f"{len(outputs[source])} output(s)")
            value = outputs[source][slot]
        kwargs[name] = value
    return kwargs


def _hidden_inputs(cls, node_id: str, values: dict) -> dict:
    hidden = cls.INPUT_TYPES().get("hidden", {})
    return {name: (node_id if kind == "UNIQUE_ID" else values.get(kind)) for name, kind in hidden.items()}


def _store(result: GraphResult, node_id: str, cls, returned) -> None:
    if isinstance(returned, dict):
        if "ui" in returned:
            result.ui[node_id] = returned["ui"]
        returned = returned.get("result", ())
    returned = tuple(returned or ())
    expected = len(getattr(cls, "RETURN_TYPES", ()))
    if len(returned) != expected:
        raise GraphError(f"node {node_id} ({cls.__name__}) returned {len(returned)} value(s) for "
                         f"{expected} declared output(s)")
    result.outputs[node_id] = returned


def _id_key(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
