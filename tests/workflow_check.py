"""Check a UI-format (LiteGraph) workflow against the pack's node definitions, as the ComfyUI frontend reads it.

The rules, taken from ComfyUI core (``execution.py``) and the frontend (``useIntWidget.ts``, ``useFloatWidget.ts``,
``useComboWidget.ts``, ``useImageUploadWidget.ts``, ``LGraphNode.serialize``):

- A workflow is ``{"nodes": [...], "links": [...]}``; a link is ``[id, from_node, from_slot, to_node, to_slot,
  TYPE]``. ``from_slot`` indexes the source node's outputs (= ``RETURN_TYPES``); ``to_slot`` indexes the target
  node's ``inputs`` list as saved in the file (each entry has ``name``, ``type``, ``link``, and ``widget:
  {"name"}`` when it is a widget that has an input socket too).
- Which inputs are widgets: ``INT``, ``FLOAT``, ``STRING``, ``BOOLEAN`` and combos (a list of choices, or the
  type ``COMBO`` with ``options``), from ``required`` then ``optional`` in declaration order; ``hidden`` inputs
  never appear; an input with ``forceInput`` is a socket only. Every other type (``IMAGE``, ``WAN_MODEL``, ...)
  is a socket and has no entry in ``widgets_values``.
- ``widgets_values`` is positional, in widget order. A widget keeps its slot when it is converted to an input
  and linked (the stored value is then unused). A list shorter than the widgets is read as far as it goes and the
  rest keep their defaults (a workflow saved before a widget was appended); it must fit the slots it covers.
- Extra serialized values: an ``INT`` with option ``control_after_generate`` (or, when the option is absent, an
  ``INT`` named ``seed`` or ``noise_seed``) and a ``FLOAT`` with a true ``control_after_generate`` are followed
  by their control value (``fixed``/``increment``/``decrement``/``randomize``). A combo with ``image_upload``
  is followed by the upload button's value ``"image"``.
- Numbers without ``min``/``max`` are clamped by the frontend to 0..2048, so those bounds apply then too.
- Link types must equal the source's ``RETURN_TYPES`` entry and the target's declared input type (``*`` matches
  anything; combos travel as ``COMBO``). Required socket inputs must be linked (core refuses the prompt
  otherwise).
- Core node types are allowed only from ``CORE_NODES`` (used on purpose: notes, image loading).
- A combo input named in the node's ``VALIDATE_INPUTS`` is not checked against its choices by core
  (``execution.py``): the node's own check decides (e.g. a tokenizer value '' saved by an earlier version).

Layout (``check_layout``), with the frontend's geometry (litegraph ``LGraphNode.computeSize`` / ``measure``,
``LGraphGroup``): a node's ``pos`` is the top-left of its body; its title bar (30 px) sits above it. The smallest
body the frontend gives a node is one 20 px row per socket or output (the larger count), 20 + 4 px per widget
(a control value or upload button is a widget too; a multiline text box takes more), plus 8 + 6 px; a stored
``size`` below that would be enlarged on load, so it counts as too small. No two nodes (title bar included) may
overlap; every node but the notes lies inside a group (below the group's title bar) and groups do not overlap;
the notes sit above every other node.

Combo widgets listing model files (filled from the user's model folders) cannot list the workflow's file
names on this machine; ``file_widgets`` finds them by probing ``INPUT_TYPES`` with a placeholder file in every
model folder, and their values need only be weight file names.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
SEED_NAMES = ("seed", "noise_seed")
FRONTEND_NUMBER_BOUNDS = (0, 2048)
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt")
PROBE_FILE = "__probe__.safetensors"

# Core ComfyUI nodes the example workflows may use: widget specs and output types, as core defines them.
CORE_NODES = {
    "Note": ({"required": {"text": ("STRING", {"multiline": True})}}, ()),
    "MarkdownNote": ({"required": {"text": ("STRING", {"multiline": True})}}, ()),
    "LoadImage": ({"required": {"image": ([], {"image_upload": True})}}, ("IMAGE", "MASK")),
    "LoadAudio": ({"required": {"audio": ([], {"audio_upload": True})}}, ("AUDIO",)),
    "LoadVideo": ({"required": {"file": ([], {"video_upload": True})}}, ("VIDEO",)),
    "GetVideoComponents": ({"required": {"video": ("VIDEO", {})}}, ("IMAGE", "AUDIO", "FLOAT")),
    "ImageToMask": ({"required": {"image": ("IMAGE", {}), "channel": (["red", "green", "blue", "alpha"], {})}},
                    ("MASK",)),
}
OPEN_CORE_COMBOS = {("LoadImage", "image"), ("LoadAudio", "audio"), ("LoadVideo", "file")}  # files in the user's input folder


# Frontend geometry (litegraph): title bar, socket row and widget heights; min width of a node with widgets
# (NODE_WIDTH 140 x 1.5); font sizes of titles and labels and the 0.6 em width per character it assumes when it
# cannot measure text.
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, WIDGET_GAP = 30, 20, 20, 4
WIDGETS_PAD, NODE_MARGIN, MIN_WIDGET_NODE_WIDTH = 8, 6, 210
TITLE_FONT, LABEL_FONT, CHAR_EM = 14, 12, 0.6
MULTILINE_HEIGHT = 100  # a DOM text box: at least this tall (the frontend's minimum is smaller)
WIDGET_VALUE_ROOM = 110  # arrows, margins and the value beside a widget's label
IMAGE_PREVIEW_HEIGHT = 220  # LoadImage shows the picked image below its widgets
GROUP_TITLE_HEIGHT = 34  # group font 24 px x 1.4
NOTE_TYPES = ("Note", "MarkdownNote")


@dataclass(frozen=True)
class Slot:
    """One entry of ``widgets_values``: a widget's value, or the extra value that follows it."""

    input: str
    kind: str  # "value" | "control" | "upload"
    type: str = ""
    options: dict | None = None
    choices: tuple | None = None


def check_workflow(workflow: dict, mappings: dict, file_widgets: set | None = None) -> list[str]:
    """Every problem found, as readable strings (empty when the workflow is consistent)."""
    file_widgets = (file_widgets if file_widgets is not None else set()) | OPEN_CORE_COMBOS
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    problems = []
    for node in nodes.values():
        spec = node_spec(node["type"], mappings)
        if spec is None:
            problems.append(f"node {node['id']}: unknown node type '{node['type']}'")
            continue
        problems += _check_widgets(node, spec[0], file_widgets, mappings.get(node["type"]))
        problems += _check_sockets(node, spec[0])
    for link in workflow.get("links", []):
        problems += _check_link(link, nodes, mappings)
    return problems


def node_spec(node_type: str, mappings: dict):
    """(INPUT_TYPES dict, RETURN_TYPES) of a pack node or an allowed core node; None when unknown."""
    if node_type in mappings:
        cls = mappings[node_type]
        return cls.INPUT_TYPES(), tuple(cls.RETURN_TYPES)
    return CORE_NODES.get(node_type)


def widget_slots(input_types: dict) -> list[Slot]:
    """The ``widgets_values`` layout of a node: one slot per widget, plus control / upload slots."""
    slots = []
    for section in ("required", "optional"):
        for name, spec in input_types.get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            choices = tuple(kind) if isinstance(kind, (list, tuple)) else None
            if kind == "COMBO":
                choices = tuple(options.get("options", ()))
            type_name = "COMBO" if choices is not None else kind
            if type_name not in WIDGET_TYPES or options.get("forceInput"):
                continue
            slots.append(Slot(name, "value", type_name, options, choices))
            if _has_control(name, type_name, options):
                slots.append(Slot(name, "control"))
            if type_name == "COMBO" and options.get("image_upload"):
                slots.append(Slot(name, "upload"))
    return slots


def socket_type(input_types: dict, name: str) -> str | None:
    """Declared type of an input as links carry it (combos as ``COMBO``); None when there is no such input."""
    for section in ("required", "optional"):
        spec = input_types.get(section, {}).get(name)
        if spec is not None:
            return "COMBO" if isinstance(spec[0], (list, tuple)) else spec[0]
    return None


def file_widgets(mappings: dict, kinds=("diffusion_models", "text_encoders", "vae", "clip_vision", "loras",
                                               "audio_encoders")) -> set:
    """(node type, input) pairs whose combo lists model files, found with a placeholder file per model folder."""
    found = set()
    with _probe_models(kinds):
        for node_type, cls in mappings.items():
            for slot in widget_slots(cls.INPUT_TYPES()):
                if slot.kind == "value" and slot.choices and PROBE_FILE in slot.choices:
                    found.add((node_type, slot.input))
    return found


def _has_control(name: str, type_name: str, options: dict) -> bool:
    if type_name == "INT":
        flag = options.get("control_after_generate")
        return bool(flag) if flag is not None else name in SEED_NAMES
    return type_name == "FLOAT" and bool(options.get("control_after_generate"))


def _check_widgets(node: dict, input_types: dict, file_widgets: set, cls=None) -> list[str]:
    where = f"node {node['id']} ({node['type']})"
    slots = widget_slots(input_types)
    values = node.get("widgets_values", [])
    if not isinstance(values, list):
        return [f"{where}: widgets_values must be a list, got {type(values).__name__}"]
    problems = []
    for slot, value in zip(slots, values):
        problem = _check_value(slot, value, (node["type"], slot.input) in file_widgets)
        if problem and slot.type == "COMBO" and _validated_by_node(cls, slot.input, value):
            problem = None
        if problem:
            problems.append(f"{where}.{slot.input}: {problem}")
    if len(values) > len(slots) or (len(values) < len(slots) and problems):
        layout = ", ".join(s.input if s.kind == "value" else f"<{s.kind}>" for s in slots)
        read_as = f"; read as far as they go: {'; '.join(problems)}" if problems else ""
        return [f"{where}: {len(values)} widgets_values for {len(slots)} widget slots ({layout}){read_as}"]
    return problems


def _validated_by_node(cls, name: str, value) -> bool:
    """ComfyUI leaves an input named in the node's ``VALIDATE_INPUTS`` to that check (no choice check of its own)."""
    import inspect

    check = getattr(cls, "VALIDATE_INPUTS", None)
    return check is not None and name in inspect.signature(check).parameters and check(**{name: value}) is True


def _check_value(slot: Slot, value, is_file: bool) -> str | None:
    if slot.kind == "control":
        return None if value in CONTROL_VALUES else f"control_after_generate value {value!r} not in {CONTROL_VALUES}"
    if slot.kind == "upload":
        return None if value == "image" else f"upload widget value {value!r} should be 'image'"
    if slot.type == "COMBO":
        if is_file:
            ok = isinstance(value, str) and (value.lower().endswith(WEIGHT_SUFFIXES)
                                             or slot.input in ("image", "audio", "file"))
            return None if ok else f"{value!r} is not a file name"
        return None if value in slot.choices else f"{value!r} is not one of {list(slot.choices)}"
    if slot.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if slot.type == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    return _check_number(slot, value)


def _check_number(slot: Slot, value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if slot.type == "INT" and not float(value).is_integer():
        return f"{value!r} is not an integer"
    lo = slot.options.get("min", FRONTEND_NUMBER_BOUNDS[0])
    hi = slot.options.get("max", FRONTEND_NUMBER_BOUNDS[1])
    return None if lo <= value <= hi else f"{value} is outside {lo}..{hi}"


def _check_sockets(node: dict, input_types: dict) -> list[str]:
    where = f"node {node['id']} ({node['type']})"
    problems, linked = [], set()
    for entry in node.get("inputs", []):
        declared = socket_type(input_types, entry.get("name"))
        if declared is None:
            problems.append(f"{where}: input '{entry.get('name')}' is not declared by the node")
        elif not types_match(entry.get("type"), declared):
            problems.append(f"{where}: input '{entry['name']}' has type {entry.get('type')}, declared {declared}")
        if entry.get("link") is not None:
            linked.add(entry.get("name"))
    widget_inputs = {s.input for s in widget_slots(input_types)}
    for name in input_types.get("required", {}):
        if name not in widget_inputs and name not in linked:
            problems.append(f"{where}: required input '{name}' is not connected")
    return problems


def _check_link(link, nodes: dict, mappings: dict) -> list[str]:
    if not isinstance(link, list) or len(link) != 6:
        return [f"link {link!r} must be [id, from_node, from_slot, to_node, to_slot, TYPE]"]
    link_id, src, src_slot, dst, dst_slot, kind = link
    if src not in nodes or dst not in nodes:
        return [f"link {link_id}: node {src if src not in nodes else dst} does not exist"]
    problems = []
    src_spec, dst_spec = node_spec(nodes[src]["type"], mappings), node_spec(nodes[dst]["type"], mappings)
    if src_spec is not None:
        outputs = src_spec[1]
        if src_slot >= len(outputs):
            problems.append(f"link {link_id}: node {src} has no output {src_slot}")
        elif not types_match(kind, outputs[src_slot]):
            problems.append(f"link {link_id}: type {kind}, but node {src} output {src_slot} is {outputs[src_slot]}")
    entries = nodes[dst].get("inputs", [])
    if dst_slot >= len(entries):
        return problems + [f"link {link_id}: node {dst} has no input slot {dst_slot}"]
    entry = entries[dst_slot]
    if entry.get("link") != link_id:
        problems.append(f"link {link_id}: node {dst} input '{entry.get('name')}' points to link {entry.get('link')}")
    declared = socket_type(dst_spec[0], entry.get("name")) if dst_spec else None
    if declared is not None and not types_match(kind, declared):
        problems.append(f"link {link_id}: type {kind} into node {dst} input '{entry['name']}' of type {declared}")
    return problems


def types_match(a, b) -> bool:
    if a == "*" or b == "*":
        return True
    return bool(set(str(a).split(",")) & set(str(b).split(",")))


@contextmanager
def _probe_models(kinds):
    old = os.environ.get("WAN_EXPERTS_MODELS")
    with tempfile.TemporaryDirectory() as root:
        for kind in kinds:
            Path(root, kind).mkdir()
            Path(root, kind, PROBE_FILE).touch()
        os.environ["WAN_EXPERTS_MODELS"] = root
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("WAN_EXPERTS_MODELS", None)
            else:
                os.environ["WAN_EXPERTS_MODELS"] = old


def min_node_size(node_type: str, mappings: dict, title: str | None = None) -> tuple[int, int]:
    """The smallest (width, height) of the node's body the frontend would keep, from its inputs and outputs."""
    input_types, outputs = node_spec(node_type, mappings)
    slots = widget_slots(input_types)
    widget_names = {s.input for s in slots}
    sockets = [n for sec in ("required", "optional") for n in input_types.get(sec, {}) if n not in widget_names]
    height = max(len(sockets), len(outputs), 1) * SLOT_HEIGHT
    height += sum(_widget_height(s) + WIDGET_GAP for s in slots) + (WIDGETS_PAD if slots else 0) + NODE_MARGIN
    if any(s.kind == "upload" for s in slots):
        height += IMAGE_PREVIEW_HEIGHT
    title = title or getattr(mappings.get(node_type), "DISPLAY_NAME", node_type)
    label = max([len(n) for n in sockets] + [0]) + max([len(n) for n in _output_names(node_type, mappings)] + [0])
    width = max(
        TITLE_HEIGHT * 1.33 + _text_width(title, TITLE_FONT),
        _text_width("x" * label, LABEL_FONT) + 2 * SLOT_HEIGHT + 5,
        max([_text_width(s.input, LABEL_FONT) + WIDGET_VALUE_ROOM for s in slots], default=0),
        MIN_WIDGET_NODE_WIDTH if slots else 0,
    )
    return int(round(width + 0.5)), int(height)


def check_layout(workflow: dict, mappings: dict) -> list[str]:
    """Layout problems: nodes smaller than their content, overlapping nodes or groups, nodes outside groups, notes
    not on top."""
    nodes = workflow.get("nodes", [])
    problems = [p for node in nodes if (p := _size_problem(node, mappings))]
    boxes = {node["id"]: node_box(node) for node in nodes}
    ids = sorted(boxes)
    problems += [f"nodes {a} and {b} overlap" for i, a in enumerate(ids) for b in ids[i + 1:]
                 if _overlap(boxes[a], boxes[b])]
    problems += _group_problems(workflow.get("groups", []), nodes, boxes)
    notes = [n["id"] for n in nodes if n["type"] in NOTE_TYPES]
    others = [n["id"] for n in nodes if n["type"] not in NOTE_TYPES]
    if not notes:
        problems.append("the workflow has no note")
    elif others and max(_bottom(boxes[i]) for i in notes) > min(boxes[i][1] for i in others):
        problems.append("the notes are not above every other node")
    return problems


def node_box(node: dict) -> tuple[float, float, float, float]:
    """(x, y, width, height) the node covers, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, w, h + TITLE_HEIGHT


def _size_problem(node: dict, mappings: dict) -> str | None:
    if node["type"] in NOTE_TYPES or node_spec(node["type"], mappings) is None:
        return None
    need = min_node_size(node["type"], mappings, node.get("title"))
    if node["size"][0] < need[0] or node["size"][1] < need[1]:
        return f"node {node['id']} ({node['type']}) is {node['size']}, smaller than its content {list(need)}"
    return None


def _group_problems(groups: list, nodes: list, boxes: dict) -> list[str]:
    problems = []
    bounds = [tuple(g["bounding"]) for g in groups]
    for i, a in enumerate(bounds):
        problems += [f"groups '{groups[i]['title']}' and '{groups[j]['title']}' overlap"
                     for j in range(i + 1, len(bounds)) if _overlap(a, bounds[j])]
    for node in nodes:
        if node["type"] in NOTE_TYPES:
            continue
        inside = [g["title"] for g, b in zip(groups, bounds) if _contains(b, boxes[node["id"]])]
        if len(inside) != 1:
            problems.append(f"node {node['id']} ({node['type']}) lies in {len(inside)} groups {inside}, not in one")
    return problems


def _contains(group: tuple, box: tuple) -> bool:
    gx, gy, gw, gh = group
    x, y, w, h = box
    return gx <= x and x + w <= gx + gw and gy + GROUP_TITLE_HEIGHT <= y and y + h <= gy + gh


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _bottom(box: tuple) -> float:
    return box[1] + box[3]


def _widget_height(slot: Slot) -> int:
    multiline = slot.kind == "value" and slot.type == "STRING" and (slot.options or {}).get("multiline")
    return MULTILINE_HEIGHT if multiline else WIDGET_HEIGHT


def _text_width(text: str, font: int) -> float:
    return font * CHAR_EM * len(text)


def _output_names(node_type: str, mappings: dict) -> tuple:
    cls = mappings.get(node_type)
    if cls is None:
        return node_spec(node_type, mappings)[1]
    return tuple(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
