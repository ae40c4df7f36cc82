"""Counts, sizes and JSON from files and graphs are bounded, and bad ones end in the pack's own error naming the input:
step-cache files nested too deep, too many window prompts (refused before the text encoder runs), non-finite window
sizes through the engine API, a broken config.json in models/LLM, a safetensors index whose map is not a map."""
import math
import time

import pytest
import torch

from wan.cache.tables import load_coefficients, load_curves
from wan.weights.checkpoint import read_state_dict
from wan.errors import CheckpointError, InputError
from wan.prompts import LocalOptions, extend_prompt
from wan.sampling.windows import MAX_WINDOW_PROMPTS, ContextWindows


@pytest.mark.parametrize("load", [load_coefficients, load_curves])
def test_step_cache_file_nested_too_deep_is_refused_at_once(tmp_path, load):
    path = tmp_path / "deep.json"
    path.write_text('{"coefficients": ' + "[" * 200_000 + "]" * 200_000 + "}")
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"step-cache data file '.*deep.json' is not readable JSON \(arrays or "
                                         r"objects nested 200001 deep, more than 32\)"):
        load(path)
    assert time.perf_counter() - start < 1.0


def test_step_cache_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"coefficients": "\xe9"}')
    with pytest.raises(InputError, match=r"latin1.json' is not readable JSON"):
        load_coefficients(path)


class Encoder:
    def __init__(self):
        self.calls = 0

    def encode(self, lines):
        self.calls += 1
        return torch.zeros(len(lines), 4, 8)


def test_too_many_window_prompts_are_refused_before_encoding(pack):
    node = pack.nodes.long_video.WanExpertsContextWindows
    text = "\n".join(f"shot {i}" for i in range(MAX_WINDOW_PROMPTS + 1))
    problem = node.VALIDATE_INPUTS(window_prompts=text)
    assert isinstance(problem, str) and f"window_prompts has {MAX_WINDOW_PROMPTS + 1} prompts" in problem
    encoder = Encoder()
    with pytest.raises(pack.wan.errors.InputError, match=f"at most {MAX_WINDOW_PROMPTS} are taken"):
        node().make(window_prompts=text, text_encoder=encoder)
    assert encoder.calls == 0
    assert node.VALIDATE_INPUTS(window_prompts="a\nb") is True
    with pytest.raises(InputError, match=f"window_prompts has {MAX_WINDOW_PROMPTS + 1} prompts"):
        ContextWindows(prompts=torch.zeros(MAX_WINDOW_PROMPTS + 1, 4, 8))


@pytest.mark.parametrize("kwargs,needle", [
    ({"context_frames": math.nan}, r"context_frames nan must be a whole number"),
    ({"context_frames": math.inf}, r"context_frames inf must be a whole number"),
    ({"context_frames": 81.5}, r"context_frames 81.5 must be a whole number"),
    ({"context_overlap": -math.inf}, r"context_overlap -inf must be a whole number"),
    ({"context_overlap": "16"}, r"context_overlap must be a number"),
])
def test_non_finite_window_sizes_are_named(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        ContextWindows(**kwargs)


@pytest.mark.parametrize("config", [b"{not json", b"\xff\xfe{}", b"[1, 2]", b"[" * 5000 + b"]" * 5000])
def test_broken_llm_config_is_named(tmp_path, config):
    folder = tmp_path / "LLM" / "Qwen2.5-7B-Instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(config)
    with pytest.raises(InputError, match=r"Prompt-extension model 'Qwen2.5-7B-Instruct': config.json "
                                         r"(is not readable JSON|holds a JSON list)"):
        extend_prompt("a cat", "local_qwen", "Qwen2.5_7B", "en", seed=1,
                      local=LocalOptions(model_dirs=(str(tmp_path / "LLM"),)))


@pytest.mark.parametrize("index", ['{"weight_map": ["a.safetensors"]}', '{"weight_map": {"w": 3}}',
                                   "[" * 5000 + "]" * 5000])
def test_bad_safetensors_index_is_named(tmp_path, index):
    path = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    path.write_text(index)
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model.safetensors.index.json"):
        read_state_dict(path)
