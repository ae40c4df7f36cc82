"""A hostile API client's graphs (as ``POST /prompt`` would bring them), run through the test graph runner with its
ComfyUI-style validation: NaN numbers, a FIFO and device paths as file inputs, an over-large size, a NUL in the
prefix. Each ends with the pack's own error well under a second and leaves nothing in the output folder."""
import json
import math
import os
import time
from pathlib import Path

import pytest

from graph_runner import GraphValidationError, run_graph
from test_workflows_examples import WORKFLOWS, classes, tiny_models  # noqa: F401 (fixtures)
from tiny_workflows import shrink, write_models

WORKFLOW = WORKFLOWS / "api" / "wan2.1_t2v_1.3B_teacache.json"
A14B_WORKFLOW = WORKFLOWS / "api" / "wan2.2_t2v_A14B_magcache.json"  # Wan Sampler (Advanced), MagCache
LORA_WORKFLOW = WORKFLOWS / "api" / "wan2.2_t2v_A14B_4steps_lora.json"  # Wan 2.2 LoRA Pair
CASCADE_WORKFLOW = WORKFLOWS / "api" / "wan2.2_t2v_A14B_upscale_cascade_1080p.json"  # two upscale + refine stages
NAN = math.nan


def node_of(graph: dict, class_type: str) -> dict:
    (node,) = [n for n in graph.values() if n["class_type"] == class_type]
    return node["inputs"]


def last_of(graph: dict, class_type: str) -> dict:
    return [n for n in graph.values() if n["class_type"] == class_type][-1]["inputs"]


def fifo(folder: Path, name: str) -> str:
    folder.mkdir(exist_ok=True)
    os.mkfifo(folder / name)
    return name


CASES = {  # name -> (change to the graph, expected message[, workflow])
    "nan guidance": (lambda g, m: node_of(g, "WanExpertsSamplerBasic").update(cfg=NAN), "cfg nan is out of range"),
    "nan shift": (lambda g, m: node_of(g, "WanExpertsSamplerBasic").update(shift=NAN), "shift nan is out of range"),
    "inf guidance": (lambda g, m: node_of(g, "WanExpertsSamplerBasic").update(cfg=math.inf), "cfg inf"),
    "nan threshold": (lambda g, m: node_of(g, "WanExpertsTeaCache").update(threshold=NAN), "threshold nan"),
    "nan fps": (lambda g, m: node_of(g, "WanExpertsSaveVideo").update(fps=NAN), "fps nan is out of range"),
    "fifo tokenizer": (lambda g, m: node_of(g, "WanExpertsLoadTextEncoder").update(
        tokenizer=fifo(m / "text_encoders", "spiece.model")), "tokenizer 'spiece.model' is not available"),
    "device tokenizer": (lambda g, m: node_of(g, "WanExpertsLoadTextEncoder").update(tokenizer="/dev/zero"),
                         "tokenizer '/dev/zero' is not available"),
    "device cache file": (lambda g, m: node_of(g, "WanExpertsTeaCache").update(coefficients_file="/dev/urandom"),
                          "step-cache data file '/dev/urandom' is not available"),
    "fifo cache file": (lambda g, m: node_of(g, "WanExpertsTeaCache").update(
        coefficients_file=fifo(m / "wan_step_cache", "mine.json")), "step-cache data file 'mine.json' is not"),
    "device as a model": (lambda g, m: node_of(g, "WanExpertsLoadDiT").update(model_name="/dev/zero"),
                          "'/dev/zero' was not found in the diffusion_models folder"),
    "size over the limit": (lambda g, m: node_of(g, "WanExpertsEmptyLatent").update(width=8192, height=8192),
                            "width 8192 must be a whole number from 16 to 4096"),
    "size over the ceiling": (lambda g, m: node_of(g, "WanExpertsEmptyLatent").update(
        width=4096, height=4096, frames=1025), "4096x4096, 1025 frames, batch 1 is 17196646400 pixels"),
    "inf denoise": (lambda g, m: node_of(g, "WanExpertsSampler").update(denoise=math.inf), "denoise inf",
                    A14B_WORKFLOW),
    "nan boundary": (lambda g, m: node_of(g, "WanExpertsSampler").update(boundary=NAN), "boundary nan",
                     A14B_WORKFLOW),
    "nan retention": (lambda g, m: node_of(g, "WanExpertsMagCache").update(retention_ratio=NAN),
                      "retention_ratio nan", A14B_WORKFLOW),
    "nan LoRA strength": (lambda g, m: node_of(g, "WanExpertsLoRAPair").update(high_strength=NAN),
                          "high_strength nan is out of range", LORA_WORKFLOW),
    "NUL in prefix": (lambda g, m: node_of(g, "WanExpertsSaveVideo").update(filename_prefix="video/\0x"),
                      r"filename_prefix contains '\x00'"),
    "nan refine strength": (lambda g, m: last_of(g, "WanExpertsVideoToVideo").update(strength=NAN),
                            "strength nan is out of range", CASCADE_WORKFLOW),
    "refine strength above 1": (lambda g, m: last_of(g, "WanExpertsVideoToVideo").update(strength=1.5),
                                "strength 1.5 is out of range", CASCADE_WORKFLOW),
    "nan upscale factor": (lambda g, m: last_of(g, "WanExpertsUpscaleVideo").update(factor=NAN),
                           "factor nan is out of range", CASCADE_WORKFLOW),
    "upscale target off the multiple": (lambda g, m: last_of(g, "WanExpertsUpscaleVideo").update(
        target="size", width=1920, height=1080), "height 1080 is not a multiple of 16", CASCADE_WORKFLOW),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_graph_ends_with_the_packs_error(case, pack, classes, models_dir, tiny_models):  # noqa: F811
    change, message, *workflow = CASES[case]
    graph = shrink(json.loads((workflow[0] if workflow else WORKFLOW).read_text()))
    write_models(graph, models_dir, tiny_models)
    change(graph, models_dir)
    errors = pack.wan.errors
    start = time.perf_counter()
    with pytest.raises((errors.WanError, FileNotFoundError, GraphValidationError)) as info:
        run_graph(graph, classes)
    elapsed = time.perf_counter() - start
    assert message in str(info.value)
    assert elapsed < 1.0, f"{case}: {elapsed:.2f} s"
    out = Path(os.environ["WAN_EXPERTS_OUTPUT"])
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


@pytest.mark.parametrize("inputs,message", [
    ({"model": "/etc"}, "is not a model name"), ({"model": "../../secrets"}, "is not a model name"),
    ({"model": "~/models/x"}, "is not a model name"), ({"model": "Qwen/../../x"}, "is not a model name"),
    ({"base_url": "https://attacker.example/api/v1"}, "is not a Dashscope address"),
    ({"base_url": "http://dashscope.aliyuncs.com/api/v1"}, "is not a Dashscope address"),
    ({"base_url": "https://user@evil.aliyuncs.com.example/"}, "is not a Dashscope address"),
])
def test_prompt_extension_takes_names_and_the_services_address_only(pack, inputs, message):
    """A graph cannot point the local model at a server path, nor send the server's API key elsewhere."""
    node = pack.nodes.prompts.WanExpertsPromptExtend
    verdict = node.VALIDATE_INPUTS(**{"model": None, "base_url": None, **inputs})
    assert message in verdict
    with pytest.raises(pack.wan.errors.InputError, match=message):
        node().extend("a cat", "dashscope", inputs.get("model", ""), "en", 0, base_url=inputs.get("base_url", ""))
    for good in ({"model": "Qwen2.5_7B"}, {"model": "Qwen/Qwen2.5-7B-Instruct"}, {"model": "qwen-vl-max"},
                 {"base_url": "https://dashscope-intl.aliyuncs.com/api/v1"}, {"model": "", "base_url": ""}):
        assert node.VALIDATE_INPUTS(**{"model": None, "base_url": None, **good}) is True
