"""The example workflows: every ``workflows/api/*.json`` runs end to end through the pack's nodes with tiny random
models (``tiny_workflows``: files under the names the workflow uses, the graph shrunk to tiny sizes) and yields a
decodable video; every UI workflow passes ``workflow_check`` (widgets, links, known nodes, and a layout without
overlaps); both formats are what ``workflows/build.py`` writes from the specs; a workflow saved before the sampler
split still loads."""
import json
import os
import sys
from pathlib import Path

import av
import pytest

from conftest import ROOT
from graph_runner import all_node_classes, run_graph
from tiny_workflows import TinyModels, expected_frames, expected_size, shrink, write_images, write_models
from workflow_check import check_layout, check_workflow, file_widgets, widget_slots

WORKFLOWS = ROOT / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
UI_FILES = sorted(WORKFLOWS.glob("*.json"))


@pytest.fixture(scope="module")
def classes(pack):
    return all_node_classes(pack)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny model files per variant, written once and linked under each workflow's file names."""
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


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
    assert len(frames) == expected_frames(graph) and frames[0].shape[:2] == expected_size(graph)


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
