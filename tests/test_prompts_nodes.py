"""Wan Prompt Extend node: inputs and tooltips, the extended prompt in the node's UI output, the models/LLM folder,
and a graph where its STRING output feeds Wan Text Encode's positive prompt (API format through the test graph
runner; UI format, a widget input with a link, through the workflow checker)."""
import importlib
import logging

import pytest
import torch

import test_encoders_support as sup
import tiny_qwen
from graph_runner import run_graph
from workflow_check import check_workflow, widget_slots

SEED = 3


@pytest.fixture
def nodes(pack):
    return importlib.import_module(pack.__name__ + ".nodes.prompts")


@pytest.fixture
def llm(models_dir):
    return tiny_qwen.write_tiny_qwen(models_dir / "LLM" / "Qwen2.5-VL-7B-Instruct", vision=True)


@pytest.fixture
def text_file(models_dir):
    sup.save_comfy_t5(sup.hf_umt5(), sup.train_spiece(), models_dir / "text_encoders" / "umt5_xxl_fp16.safetensors")
    return "umt5_xxl_fp16.safetensors"


def test_node_declares_tooltips_and_the_official_choices(nodes, pack):
    cls = pack.NODE_CLASS_MAPPINGS["WanExpertsPromptExtend"]
    assert cls is nodes.WanExpertsPromptExtend and cls.DESCRIPTION and cls.CATEGORY == "Wan Experts/conditioning"
    spec = cls.INPUT_TYPES()
    for section in spec.values():
        for name, (_, options) in section.items():
            assert options.get("tooltip"), name
    assert list(spec["required"]) == ["prompt", "method", "model", "target_lang", "seed"]
    assert spec["required"]["method"][0] == ["local_qwen", "dashscope"]  # official choices, official default first
    assert spec["required"]["target_lang"][0] == ["zh", "en"] and spec["required"]["target_lang"][1]["default"] == "zh"
    assert cls.RETURN_TYPES == ("STRING",)


def test_node_extends_with_the_image_and_shows_the_result(nodes, pack, llm):
    from wan_experts.wan.prompts import LocalOptions, extend_prompt, pil_from_tensor

    image = torch.rand(2, 64, 96, 3)
    out = nodes.WanExpertsPromptExtend().extend("a cat", "local_qwen", "", "en", SEED, image=image, device="cpu")
    (prompt,) = out["result"]
    assert out["ui"] == {"text": [prompt]}
    direct = extend_prompt("a cat", "local_qwen", str(llm), "en", [pil_from_tensor(image[0])], SEED,
                           local=LocalOptions(device="cpu"))
    assert direct.extended and prompt == direct.prompt  # the default VL model, found in models/LLM


def test_node_refuses_an_end_image_without_a_start_image(nodes, pack, llm):
    with pytest.raises(pack.wan.errors.InputError, match="end_image"):
        nodes.WanExpertsPromptExtend().extend("a cat", "local_qwen", "", "en", 0, end_image=torch.rand(1, 8, 8, 3))


def test_node_keeps_the_prompt_when_the_service_has_no_key(nodes, monkeypatch, caplog):
    monkeypatch.delenv("DASH_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        out = nodes.WanExpertsPromptExtend().extend("a cat", "dashscope", "", "en", 0)
    assert out["result"] == ("a cat",) and any("DASH_API_KEY" in r.getMessage() for r in caplog.records)


def test_extended_prompt_feeds_text_encode_in_a_graph(pack, models_dir, llm, text_file):
    graph = {
        "1": {"class_type": "WanExpertsPromptExtend", "inputs": {
            "prompt": "a cat on a surfboard", "method": "local_qwen", "model": "Qwen2.5-VL-7B-Instruct",
            "target_lang": "en", "seed": SEED, "decoding": "greedy", "device": "cpu"}},
        "2": {"class_type": "WanExpertsLoadTextEncoder", "inputs": {
            "text_encoder_name": text_file, "dtype": "fp32", "device": "cpu", "keep_loaded": False}},
        "3": {"class_type": "WanExpertsTextEncode", "inputs": {"text_encoder": ["2", 0], "positive": ["1", 0],
                                                              "negative": ""}},
    }
    result = run_graph(graph, pack.NODE_CLASS_MAPPINGS)
    (extended,) = result.outputs["1"]
    (text,) = result.outputs["3"]
    assert extended != "a cat on a surfboard" and result.ui["1"] == {"text": [extended]}
    assert text.positive_prompts == [extended]
    encoders = importlib.import_module(pack.__name__ + ".nodes.encoders")
    (encoder,) = encoders.WanExpertsLoadTextEncoder().load(text_file, "fp32", "cpu", False)
    (direct,) = encoders.WanExpertsTextEncode().encode(encoder, extended, "")
    assert torch.equal(text.positive, direct.positive)


def test_ui_workflow_with_the_prompt_linked_into_text_encode_checks_clean(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    extend_values = ["a cat", "local_qwen", "", "en", 0, "fixed", "wan2.2", "sample", "gpu", "", ""]
    assert len(extend_values) == len(widget_slots(mappings["WanExpertsPromptExtend"].INPUT_TYPES()))
    workflow = {
        "nodes": [
            {"id": 1, "type": "WanExpertsPromptExtend", "inputs": [],
             "outputs": [{"name": "prompt", "type": "STRING", "links": [1]}], "widgets_values": extend_values},
            {"id": 2, "type": "WanExpertsLoadTextEncoder", "inputs": [],
             "outputs": [{"name": "text_encoder", "type": "WAN_TEXT_ENCODER", "links": [2]}],
             "widgets_values": ["umt5_xxl_fp8_e4m3fn_scaled.safetensors", "default", "gpu", False, "auto"]},
            {"id": 3, "type": "WanExpertsTextEncode", "outputs": [{"name": "text", "type": "WAN_TEXT", "links": []}],
             "inputs": [{"name": "text_encoder", "type": "WAN_TEXT_ENCODER", "link": 2},
                        {"name": "positive", "type": "STRING", "widget": {"name": "positive"}, "link": 1}],
             "widgets_values": ["", ""]},
        ],
        "links": [[1, 1, 0, 3, 1, "STRING"], [2, 2, 0, 3, 0, "WAN_TEXT_ENCODER"]],
    }
    files = {("WanExpertsLoadTextEncoder", "text_encoder_name")}
    assert check_workflow(workflow, mappings, files) == []
    workflow["links"][0][5] = "INT"  # the checker still catches a wrong link type
    assert check_workflow(workflow, mappings, files)
