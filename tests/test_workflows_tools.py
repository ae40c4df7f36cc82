"""The test-only workflow tools: the UI-format checker catches each kind of mistake on small hand-written graphs,
and the API-format graph runner runs a small graph through real pack nodes."""
import copy
import importlib
import os

import av
import pytest
import torch

from graph_runner import GraphError, run_graph
from workflow_check import check_layout, check_workflow, file_widgets, min_node_size, widget_slots


class MakeFrames:
    """Test node: frames of one random colour; a seed widget (gets a control_after_generate slot)."""

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1}),
                             "frames": ("INT", {"default": 3, "min": 1, "max": 16})}}

    def make(self, seed, frames):
        colour = torch.rand(3, generator=torch.Generator().manual_seed(seed))
        return (colour.expand(frames, 16, 16, 3).clone(),)


class MakeRate:
    """Test node with a FLOAT output, to drive a widget converted to an input."""

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return (24.0,)


@pytest.fixture
def mappings(pack):
    video = importlib.import_module(pack.__name__ + ".nodes.video")
    return {**pack.NODE_CLASS_MAPPINGS, **video.NODES, "MakeFrames": MakeFrames, "MakeRate": MakeRate}


def _workflow():
    """MakeFrames -> Save Wan Video, plus a DiT loader (file combo) and a note, in UI format."""
    return {
        "nodes": [
            {"id": 1, "type": "MakeFrames", "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "widgets_values": [42, "fixed", 5]},
            {"id": 2, "type": "WanExpertsSaveVideo", "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
             "outputs": [], "widgets_values": [16, "video/Wan", "mp4", 19]},
            {"id": 3, "type": "WanExpertsLoadDiT", "inputs": [], "outputs": [{"name": "model", "type": "WAN_MODEL"}],
             "widgets_values": ["wan2.1_t2v_1.3B_fp16.safetensors", "default", "auto", "sdpa"]},
            {"id": 4, "type": "MarkdownNote", "inputs": [], "outputs": [], "widgets_values": ["Put files here."]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }


def _check(workflow, mappings):
    return check_workflow(workflow, mappings, file_widgets(mappings))


def test_checker_accepts_a_consistent_workflow(mappings):
    assert _check(_workflow(), mappings) == []


def test_checker_finds_model_file_combos(mappings):
    found = file_widgets(mappings)
    assert ("WanExpertsLoadDiT", "model_name") in found and ("WanExpertsLoadMoE", "low_noise_model") in found
    assert ("WanExpertsLoadDiT", "dtype") not in found


def test_seed_gets_a_control_slot(mappings):
    kinds = [(s.input, s.kind) for s in widget_slots(MakeFrames.INPUT_TYPES())]
    assert kinds == [("seed", "value"), ("seed", "control"), ("frames", "value")]


@pytest.mark.parametrize("node_index, values, expected", [
    (0, [42, 5], "2 widgets_values for 3 widget slots"),  # seed without its control value
    (1, [16, "video/Wan", "mp4", 19, "extra"], "5 widgets_values for 4"),
    (1, [16, "video/Wan", "avi", 19], "'avi' is not one of"),
    (1, [500, "video/Wan", "mp4", 19], "outside 1.0..120.0"),
    (1, [16, "video/Wan", "mp4", 19.5], "not an integer"),
    (0, [42, "sometimes", 5], "control_after_generate value 'sometimes'"),
    (2, ["notes.txt", "default", "auto", "sdpa"], "not a file name"),
])
def test_checker_catches_bad_widget_values(mappings, node_index, values, expected):
    workflow = _workflow()
    workflow["nodes"][node_index]["widgets_values"] = values
    problems = _check(workflow, mappings)
    assert len(problems) == 1 and expected in problems[0], problems


def test_checker_catches_wrong_link_type(mappings):
    workflow = _workflow()
    workflow["links"][0][5] = "LATENT"
    problems = _check(workflow, mappings)
    assert any("type LATENT, but node 1 output 0 is IMAGE" in p for p in problems), problems
    assert any("into node 2 input 'images' of type IMAGE" in p for p in problems), problems


@pytest.mark.parametrize("link_type, problem", [("FLOAT", None), ("INT", "type INT, but node 6 output 0 is FLOAT")])
def test_converted_widget_keeps_its_slot(mappings, link_type, problem):
    workflow = _workflow()
    workflow["nodes"].append({"id": 6, "type": "MakeRate", "inputs": [], "widgets_values": [],
                              "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [2]}]})
    workflow["nodes"][1]["inputs"].append({"name": "fps", "type": "FLOAT", "link": 2, "widget": {"name": "fps"}})
    workflow["links"].append([2, 6, 0, 2, 1, link_type])
    problems = _check(workflow, mappings)
    assert problems == [] if problem is None else any(problem in p for p in problems), problems


def test_checker_catches_unknown_nodes_and_missing_links(mappings):
    workflow = _workflow()
    workflow["nodes"].append({"id": 5, "type": "KSampler", "inputs": [], "outputs": [], "widgets_values": []})
    workflow["links"] = []
    workflow["nodes"][1]["inputs"][0]["link"] = None
    problems = _check(workflow, mappings)
    assert any("unknown node type 'KSampler'" in p for p in problems)
    assert any("required input 'images' is not connected" in p for p in problems)


def _laid_out():
    """A note on top, then Load DiT and Save Wan Video side by side in one group, each at its smallest size."""
    return {
        "nodes": [
            {"id": 1, "type": "MarkdownNote", "pos": [0, 30], "size": [400, 100], "widgets_values": ["Files."]},
            {"id": 2, "type": "WanExpertsLoadDiT", "pos": [20, 250], "size": [340, 200]},
            {"id": 3, "type": "WanExpertsSaveVideo", "pos": [400, 250], "size": [340, 200]},
        ],
        "groups": [{"title": "All", "bounding": [0, 180, 760, 290]}],
    }


def test_min_node_size_follows_the_frontend_rule(mappings):
    """Save Wan Video: 2 socket rows (images, audio) + 4 widgets (fps, prefix, format, crf): 2 x 20 + 4 x 24 + 8 + 6
    = 150; a seed adds its control widget (MakeFrames: 1 output row + 3 widgets = 20 + 72 + 14 = 106)."""
    assert min_node_size("WanExpertsSaveVideo", mappings)[1] == 150
    assert min_node_size("MakeFrames", mappings)[1] == 106
    assert min_node_size("WanExpertsSaveVideo", mappings)[0] >= 210


def test_layout_checker_accepts_a_clean_layout(mappings):
    assert check_layout(_laid_out(), mappings) == []


@pytest.mark.parametrize("change, expected", [
    (lambda w: w["nodes"][2].update(pos=[300, 250]), "nodes 2 and 3 overlap"),
    (lambda w: w["nodes"][2].update(pos=[20, 390]), "nodes 2 and 3 overlap"),  # node 3's title bar over node 2
    (lambda w: w["nodes"][1].update(size=[340, 60]), "smaller than its content"),
    (lambda w: w["nodes"][2].update(pos=[800, 250]), "node 3 (WanExpertsSaveVideo) lies in 0 groups"),
    (lambda w: w["groups"].append({"title": "Two", "bounding": [700, 180, 100, 290]}), "groups 'All' and 'Two'"),
    (lambda w: w["nodes"][0].update(pos=[0, 200]), "notes are not above"),
])
def test_layout_checker_catches_each_problem(mappings, change, expected):
    workflow = _laid_out()
    change(workflow)
    problems = check_layout(workflow, mappings)
    assert any(expected in p for p in problems), problems


def test_graph_runner_runs_an_api_graph(mappings, models_dir):
    graph = {
        "1": {"class_type": "MakeFrames", "inputs": {"seed": 7, "frames": 4}},
        "2": {"class_type": "WanExpertsSaveVideo",
              "inputs": {"images": ["1", 0], "fps": 16, "filename_prefix": "run", "format": "mp4", "crf": 19}},
    }
    result = run_graph(graph, mappings, workflow=_workflow())
    assert result.order == ["1", "2"] and result.outputs["1"][0].shape == (4, 16, 16, 3)
    entry = result.ui["2"]["images"][0]
    with av.open(os.path.join(os.environ["WAN_EXPERTS_OUTPUT"], entry["filename"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
        assert "MakeFrames" in container.metadata["prompt"] and "MarkdownNote" in container.metadata["workflow"]


def test_graph_runner_refuses_broken_graphs(mappings):
    good = {"1": {"class_type": "MakeFrames", "inputs": {"seed": 1, "frames": 2}}}
    cases = {
        "unknown class_type 'Nope'": {"1": {"class_type": "Nope", "inputs": {}}},
        "required input(s) ['frames'] missing": {"1": {"class_type": "MakeFrames", "inputs": {"seed": 1}}},
        "cycle": {"1": {"class_type": "WanExpertsSaveVideo", "inputs": {"images": ["2", 0]}},
                  "2": {"class_type": "WanExpertsSaveVideo", "inputs": {"images": ["1", 0]}}},
    }
    for message, graph in cases.items():
        with pytest.raises(GraphError) as info:
            run_graph(graph, mappings)
        assert message in str(info.value)
    assert run_graph(copy.deepcopy(good), mappings).outputs["1"][0].shape[0] == 2
