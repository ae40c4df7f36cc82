"""Write the example workflows (UI format in ``workflows/``, API format in ``workflows/api/``) from short specs.

    python workflows/build.py

Both formats come from one spec per workflow, so they cannot drift apart. Widget order, control values after
seeds and the image-upload value follow the rules documented in ``tests/workflow_check.py`` (which the tests use
to check the written files). Values not given in a spec take the node's declared default.

Layout (UI format): the notes node on top; below it one group per stage (models, prompt, image and latent,
sampling, output), left to right, each a column of its nodes in spec order. Node sizes come from their widgets
and sockets (``workflow_check.min_node_size``, the frontend's own rule), so nothing overlaps.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from spec_types import N, Spec  # noqa: E402
from workflow_check import (  # noqa: E402
    CORE_NODES, CORE_OUTPUT_NAMES, GROUP_TITLE_HEIGHT, TITLE_HEIGHT, min_node_size, socket_type, widget_slots)

SEED_CONTROL = "fixed"  # the stored seed reproduces the example; switch to "randomize" in the UI for variety
NODE_WIDTH, NODE_GAP, GROUP_PAD, GROUP_GAP = 340, 30, 20, 40
NOTE_POS, NOTE_SIZE = (40, 40), (760, 240)
EXTRA_HEIGHT = {"WanExpertsTextEncode": 160}  # room to read the prompts
STAGES = (  # (group title, colour, node types); nodes of other types go with the image and latent stage
    ("Models", "#3f789e", ("WanExpertsLoadDiT", "WanExpertsLoadMoE", "WanExpertsLoadTextEncoder",
                           "WanExpertsLoadCLIPVision", "WanExpertsLoadVAE", "WanExpertsLoadAudioEncoder")),
    ("Prompt", "#8a8a3f", ("WanExpertsTextEncode", "WanExpertsConditioningFromCore")),
    ("Image and latent", "#3f8a6b", ()),
    ("Sampling", "#8a5a3f", ("WanExpertsTeaCache", "WanExpertsMagCache", "WanExpertsContextWindows",
                             "WanExpertsSamplerBasic", "WanExpertsSampler", "WanExpertsSoundToVideo",
                             "WanExpertsAnimate")),
    ("Output", "#6b3f8a", ("WanExpertsVAEDecode", "WanExpertsExtendVideo", "WanExpertsSaveVideo",
                           "WanExpertsCreateVideo")),
)


def node_types(node_type: str, mappings: dict):
    """(INPUT_TYPES, RETURN_TYPES, RETURN_NAMES) of a pack node or an allowed core node."""
    if node_type in mappings:
        cls = mappings[node_type]
        return cls.INPUT_TYPES(), tuple(cls.RETURN_TYPES), tuple(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
    inputs, outputs = CORE_NODES[node_type]
    return inputs, outputs, CORE_OUTPUT_NAMES.get(node_type, outputs)


def widget_values(node: N, input_types: dict) -> dict:
    """Every widget's value by name: the spec's, else the declared default (first choice for combos)."""
    values = {}
    for slot in widget_slots(input_types):
        if slot.kind != "value":
            continue
        if slot.input in node.widgets:
            values[slot.input] = node.widgets[slot.input]
        elif "default" in slot.options:
            values[slot.input] = slot.options["default"]
        elif slot.choices:
            values[slot.input] = slot.choices[0]
        else:
            raise ValueError(f"{node.key} ({node.type}): no value and no default for widget '{slot.input}'")
    unknown = set(node.widgets) - set(values)
    if unknown:
        raise ValueError(f"{node.key} ({node.type}): {sorted(unknown)} are not widgets of this node")
    return values


def to_api(spec: Spec, mappings: dict) -> dict:
    ids = {n.key: str(i + 1) for i, n in enumerate(spec.nodes)}
    graph = {}
    for n in spec.nodes:
        inputs = widget_values(n, node_types(n.type, mappings)[0])
        inputs.update({name: [ids[src], slot] for name, (src, slot) in n.links.items()})
        title = n.title or getattr(mappings.get(n.type), "DISPLAY_NAME", n.type)
        graph[ids[n.key]] = {"class_type": n.type, "inputs": inputs, "_meta": {"title": title}}
    return graph


def to_ui(spec: Spec, mappings: dict) -> dict:
    ids = {n.key: i + 1 for i, n in enumerate(spec.nodes)}
    links, outputs_links = [], {}
    for n in spec.nodes:
        for name, (src, slot) in n.links.items():
            src_type = node_types(_by_key(spec, src).type, mappings)[1][slot]
            links.append([len(links) + 1, ids[src], slot, ids[n.key], None, src_type, name])
            outputs_links.setdefault((src, slot), []).append(len(links))
    sizes = {n.key: node_size(n, mappings) for n in spec.nodes}
    positions, groups = layout(spec, sizes)
    nodes = [_ui_node(n, ids[n.key], positions[n.key], sizes[n.key], links, outputs_links, mappings)
             for n in spec.nodes]
    note_id = len(spec.nodes) + 1
    nodes.append({"id": note_id, "type": "MarkdownNote", "pos": list(NOTE_POS), "size": list(NOTE_SIZE), "flags": {},
                  "order": note_id - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [spec.note], "title": "Model files", "color": "#432", "bgcolor": "#653"})
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": nodes,
            "links": [link[:6] for link in links], "groups": groups, "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}, "title": spec.title}, "version": 0.4}


def _ui_node(n: N, node_id: int, pos, size, links: list, outputs_links: dict, mappings: dict) -> dict:
    input_types, return_types, return_names = node_types(n.type, mappings)
    widgets = {s.input for s in widget_slots(input_types)}
    inputs = []
    for section in ("required", "optional"):
        for name in input_types.get(section, {}):
            if name in widgets and name not in n.links:
                continue
            link_id = None
            for link in links:
                if link[3] == node_id and link[6] == name:
                    link[4], link_id = len(inputs), link[0]
            entry = {"name": name, "type": socket_type(input_types, name), "link": link_id}
            if name in widgets:
                entry["widget"] = {"name": name}
            inputs.append(entry)
    outputs = [{"name": name, "type": kind, "links": outputs_links.get((n.key, i), []), "slot_index": i}
               for i, (name, kind) in enumerate(zip(return_names, return_types))]
    return {"id": node_id, "type": n.type, "pos": list(pos), "size": list(size),
            "flags": {}, "order": node_id - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": n.type}, "widgets_values": _ui_values(n, input_types),
            **({"title": n.title} if n.title else {})}


def _ui_values(n: N, input_types: dict) -> list:
    values = widget_values(n, input_types)
    out = []
    for slot in widget_slots(input_types):
        out.append(values[slot.input] if slot.kind == "value" else SEED_CONTROL if slot.kind == "control" else "image")
    return out


def node_size(n: N, mappings: dict) -> tuple[int, int]:
    """The node's body size: what its widgets and sockets need (at least NODE_WIDTH wide), rounded up to 10 px."""
    width, height = min_node_size(n.type, mappings, n.title)
    return _round_up(max(width, NODE_WIDTH)), _round_up(height + EXTRA_HEIGHT.get(n.type, 0))


def layout(spec: Spec, sizes: dict) -> tuple[dict, list]:
    """Node positions and groups: one group per stage, side by side below the note, nodes stacked inside."""
    x, top = NOTE_POS[0], NOTE_POS[1] + NOTE_SIZE[1] + GROUP_GAP
    positions, groups = {}, []
    for title, colour, members in _stages(spec):
        width = max(sizes[n.key][0] for n in members) + 2 * GROUP_PAD
        y = top + GROUP_TITLE_HEIGHT + GROUP_PAD
        for n in members:
            positions[n.key] = (x + GROUP_PAD, y + TITLE_HEIGHT)
            y += TITLE_HEIGHT + sizes[n.key][1] + NODE_GAP
        bounding = [x, top, width, y - NODE_GAP + GROUP_PAD - top]
        groups.append({"id": len(groups) + 1, "title": title, "bounding": bounding, "color": colour,
                       "font_size": 24, "flags": {}})
        x += width + GROUP_GAP
    return positions, groups


def _stages(spec: Spec) -> list[tuple[str, str, list[N]]]:
    """(title, colour, nodes) of every stage that has nodes, in stage order."""
    known = {t for _, _, types in STAGES for t in types}
    out = []
    for title, colour, types in STAGES:
        members = [n for n in spec.nodes if n.type in types or (not types and n.type not in known)]
        if members:
            out.append((title if types or _has_image(members) else "Latent", colour, members))
    return out


def _has_image(nodes: list[N]) -> bool:
    return any(n.type in ("LoadImage", "LoadAudio", "LoadVideo") for n in nodes)


def _round_up(value: float, step: int = 10) -> int:
    return int(-(-value // step) * step)


def _by_key(spec: Spec, key: str) -> N:
    return next(n for n in spec.nodes if n.key == key)


def write_all(specs: list[Spec], mappings: dict, folder: Path = HERE) -> list[Path]:
    (folder / "api").mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs:
        for path, data in ((folder / f"{spec.name}.json", to_ui(spec, mappings)),
                           (folder / "api" / f"{spec.name}.json", to_api(spec, mappings))):
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            written.append(path)
    return written


def pack_mappings() -> dict:
    from conftest import import_pack
    from graph_runner import all_node_classes

    return all_node_classes(import_pack("wan_experts_workflows"))


if __name__ == "__main__":
    from specs import SPECS

    for written in write_all(SPECS, pack_mappings()):
        print(written.relative_to(ROOT))
