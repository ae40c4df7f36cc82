"""The example workflows: every ``workflows/api/*.json`` runs end to end through the pack's nodes with tiny random
models (written by ``wan.demo`` under the file names the workflow uses) and yields a decodable video; every UI
workflow passes ``workflow_check`` (widgets, links, known nodes, and a layout without overlaps); both formats are
what ``workflows/build.py`` writes from the specs; a workflow saved before the sampler split still loads.

Only what the tiny models cannot take is changed before a run: size, frame count and steps (tiny and few), and
step caches may fall back to other models' data (the tiny DiTs are no published variant)."""
import json
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ROOT
from graph_runner import all_node_classes, run_graph
from workflow_check import check_layout, check_workflow, file_widgets, widget_slots
from wan import demo
from wan.lora.demo import write_demo_lora

WORKFLOWS = ROOT / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
TINY = {"width": 64, "height": 32, "frames": 5, "steps": 3, "context_frames": 5, "context_overlap": 4,
        "overlap_frames": 1}
LONG_FRAMES = 13  # a video sampled in context windows: 4 latent frames in windows of 2
EXTEND = "WanExpertsExtendVideo"
FILE_INPUTS = {"model_name": "diffusion_models", "high_noise_model": "diffusion_models",
               "low_noise_model": "diffusion_models", "text_encoder_name": "text_encoders", "vae_name": "vae",
               "clip_name": "clip_vision", "lora_name": "loras", "high_noise_lora": "loras",
               "low_noise_lora": "loras"}


@pytest.fixture(scope="module")
def classes(pack):
    return all_node_classes(pack)


def variant_of(dit_name: str) -> str:
    """The variant a Comfy-Org DiT file name stands for."""
    name = dit_name.lower()
    if "ti2v" in name:
        return "wan22_ti2v_5b"
    if "flf2v" in name:
        return "wan21_flf2v_14b"
    if "wan2.2" in name:
        return "wan22_i2v_a14b" if "i2v" in name else "wan22_t2v_a14b"
    if "i2v" in name:
        return "wan21_i2v_14b"
    return "wan21_t2v_1.3b" if "1.3b" in name else "wan21_t2v_14b"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny model files per variant, written once and linked under each workflow's file names."""
    cache_dir, written = tmp_path_factory.mktemp("tiny_models"), {}

    def files_for(variant: str, experts: int, with_clip: bool) -> demo.DemoModels:
        key = (variant, experts, with_clip)
        if key not in written:
            names = {"diffusion_models": [f"dit{i}.safetensors" for i in range(experts)],
                     "text_encoders": "t5.safetensors", "vae": "vae.safetensors",
                     "clip_vision": "clip.safetensors" if with_clip else None}
            written[key] = demo.write_comfy_files(cache_dir / "_".join(map(str, key)), variant, names)
        return written[key]

    return files_for


def write_models(graph: dict, models_dir: Path, tiny_models) -> None:
    names: dict = {}
    for node in graph.values():
        for key, kind in FILE_INPUTS.items():
            if key in node["inputs"]:
                names.setdefault(kind, []).append(node["inputs"][key])
    dits = names["diffusion_models"]
    files = tiny_models(variant_of(dits[0]), len(dits), "clip_vision" in names)
    sources = {"diffusion_models": files.dits, "text_encoders": [files.text_encoder], "vae": [files.vae],
               "clip_vision": [files.clip]}
    for i, name in enumerate(names.pop("loras", [])):  # random LoRAs that fit the tiny DiT
        write_demo_lora(files.dits[0], models_dir / "loras" / name, seed=i)
    for kind, wanted in names.items():
        for source, name in zip(sources[kind], wanted):
            os.link(source, models_dir / kind / name)


def write_images(graph: dict, input_dir: Path) -> None:
    from PIL import Image

    input_dir.mkdir(exist_ok=True)
    for i, node in enumerate(n for n in graph.values() if n["class_type"] == "LoadImage"):
        pixels = np.random.default_rng(i).integers(0, 255, (48, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(input_dir / node["inputs"]["image"])


def shrink(graph: dict) -> dict:
    long = any(node["class_type"] == "WanExpertsContextWindows" for node in graph.values())
    for node in graph.values():
        inputs = node["inputs"]
        for key, value in TINY.items():
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = LONG_FRAMES if key == "frames" and long and node["class_type"] != EXTEND else value
        if "allow_fallback" in inputs:
            inputs["allow_fallback"] = True
    return graph


def test_every_task_has_an_example():
    names = {p.stem for p in API_FILES}
    assert {p.stem for p in UI_FILES} == names and len(names) >= 9


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_with_tiny_models(path, classes, models_dir, tmp_path, tiny_models):
    graph = json.loads(path.read_text())
    write_models(graph, models_dir, tiny_models)
    write_images(graph, tmp_path / "input")
    result = run_graph(shrink(graph), classes, input_dir=tmp_path / "input")
    (node_id, ui), = result.ui.items()
    entry = ui["images"][0]
    file = Path(os.environ["WAN_EXPERTS_OUTPUT"]) / entry["subfolder"] / entry["filename"]
    with av.open(str(file)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert json.loads(container.metadata["prompt"])[node_id]["class_type"] == "WanExpertsSaveVideo"
    assert len(frames) == expected_frames(graph) and frames[0].shape[:2] == (TINY["height"], TINY["width"])


def expected_frames(graph: dict) -> int:
    """The sampled video's frames, plus the new frames of each extension (segment minus the frames it shares)."""
    nodes = [n for n in graph.values() if "frames" in n["inputs"]]
    first = next(n["inputs"]["frames"] for n in nodes if n["class_type"] != EXTEND)
    return first + sum(n["inputs"]["frames"] - n["inputs"]["overlap_frames"] for n in nodes if n["class_type"] == EXTEND)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_is_consistent(path, classes):
    workflow = json.loads(path.read_text())
    assert check_workflow(workflow, classes, file_widgets(classes)) == []
    assert check_layout(workflow, classes) == []
    notes = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    assert notes and "ComfyUI/models/" in notes[0]["widgets_values"][0]
    assert len(workflow["groups"]) >= 4  # models, prompt, (image and) latent, sampling, output


def test_workflow_saved_before_the_sampler_split_still_loads(classes):
    """A UI file written by the previous version (one sampler node, id WanExpertsSampler, 16 positional widget
    values): every value still lands in the widget of the same name, read against that version's API twin."""
    legacy = json.loads((ROOT / "tests" / "data" / "legacy_wan2.2_t2v_A14B.json").read_text())
    api = json.loads((ROOT / "tests" / "data" / "legacy_wan2.2_t2v_A14B.api.json").read_text())
    assert check_workflow(legacy, classes, file_widgets(classes)) == []
    node = next(n for n in legacy["nodes"] if n["type"] == "WanExpertsSampler")
    slots = widget_slots(classes["WanExpertsSampler"].INPUT_TYPES())
    loaded = {s.input: v for s, v in zip(slots, node["widgets_values"]) if s.kind == "value"}
    saved = {k: v for k, v in api[str(node["id"])]["inputs"].items() if not isinstance(v, list)}
    assert loaded == saved and len(loaded) == 15


def test_files_match_the_specs(classes):
    sys.path.insert(0, str(WORKFLOWS))
    try:
        from build import to_api, to_ui
        from specs import SPECS
    finally:
        sys.path.remove(str(WORKFLOWS))
    for spec in SPECS:
        stale = f"workflows/{spec.name}.json is out of date with the nodes or specs: run python workflows/build.py"
        assert json.loads((WORKFLOWS / "api" / f"{spec.name}.json").read_text()) == to_api(spec, classes), stale
        assert json.loads((WORKFLOWS / f"{spec.name}.json").read_text()) == to_ui(spec, classes), stale
