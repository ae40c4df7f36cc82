"""Multi-process options in one process: every impossible combination stops with a clear message before any
model loads (the runs with several processes are in test_distributed_parity.py)."""
import dataclasses

import pytest

import wan.dit.loader
import wan.encoders
from wan.distributed import ParallelOptions, check_options
from wan.errors import InputError
from wan.generate import build_parser, main, settings_from_args
from wan.runner.pipeline import OFFICIAL_T5, OFFICIAL_TOKENIZER, OFFICIAL_VAE
from wan.runner.tasks import run


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(wan.dit.loader, "load_dit", refuse)
    monkeypatch.setattr(wan.encoders, "load_text_encoder", refuse)


@pytest.mark.parametrize("flags, message", [
    (["--dit_fsdp"], "--dit_fsdp needs several processes sharing a torch.distributed process group"),
    (["--ulysses_size", "2", "--t5_fsdp"], "--ulysses_size, --t5_fsdp need several processes"),
    (["--cfg_parallel"], "start it with torchrun --nproc_per_node=N -m wan.generate"),
    (["--ulysses_size", "0"], "--ulysses_size 0 must be at least 1"),
])
def test_multi_process_flags_in_one_process_are_refused(flags, message, capsys, no_loading):
    assert main(["--demo", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("options, world, heads, message", [
    (ParallelOptions(ulysses_size=3), 6, 40, "--ulysses_size 3 does not divide the 40 attention heads of t2v-14B: "
                                             "choose one of [1, 2, 4, 5, 8, 10, 20, 40]"),
    (ParallelOptions(ulysses_size=8), 4, 40, "--ulysses_size 8 = 8 processes per sample must divide the 4 processes"),
    (ParallelOptions(ulysses_size=2, cfg_parallel=True), 2, 40,
     "--ulysses_size 2 × 2 (--cfg_parallel) = 4 processes per sample must divide the 2 processes"),
    (ParallelOptions(t5_fsdp=True), 2, 40, "cannot be combined with --t5_cpu"),
])
def test_impossible_layouts_are_named(options, world, heads, message):
    with pytest.raises(InputError) as info:
        check_options(options, world, heads, "t2v-14B", t5_cpu=True)
    assert message in str(info.value)


@pytest.mark.parametrize("options, world", [
    (ParallelOptions(ulysses_size=8, dit_fsdp=True, t5_fsdp=True), 8),
    (ParallelOptions(ulysses_size=4, cfg_parallel=True), 8),
    (ParallelOptions(dit_fsdp=True), 8),  # FSDP alone, every process computes all tokens (official)
    (ParallelOptions(ulysses_size=2), 6),  # three copies of a 2-way split
])
def test_possible_layouts_pass(options, world):
    check_options(options, world, 40, "t2v-14B")


def test_engine_api_without_a_process_group_is_refused_before_loading(tmp_path, no_loading):
    """wan.run with ulysses_size > 1 needs an initialised process group; the folder's files are never opened."""
    for name in ("diffusion_pytorch_model.safetensors", OFFICIAL_T5, OFFICIAL_VAE["2.1"]):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / OFFICIAL_TOKENIZER).mkdir(parents=True)
    s = settings_from_args(build_parser().parse_args(["--demo"]))
    s = dataclasses.replace(s, ckpt_dir=tmp_path, demo=False, ulysses_size=2)
    with pytest.raises(InputError, match="--ulysses_size needs several processes"):
        run(s)


def test_fsdp_refuses_layers_stored_in_a_compact_format():
    """GGUF / comfy_quant layers come to the loader as ``quantized``: FSDP names the first and the alternative."""
    from pathlib import Path

    import torch

    from wan.distributed.fsdp import FsdpSharding
    from wan.weights.ops import Linear
    from wan.quant import QuantizedLayer, ScaledFP8
    from wan.weights.assign import assign_weights

    with torch.device("meta"):
        module = torch.nn.Sequential(Linear(4, 4))
    layer = QuantizedLayer(ScaledFP8(), torch.zeros(4, 4, dtype=torch.float8_e4m3fn), (4, 4))
    sharding = FsdpSharding(mesh=None, device=torch.device("cpu"), units=lambda m: [])
    with pytest.raises(InputError, match=r"--dit_fsdp cannot shard weights stored as scaled fp8 \('0.weight'\).*"
                                         r"--ulysses_size N"):
        assign_weights(module, {"0.bias": torch.zeros(4)}, {}, torch.float32, Path("x.gguf"), "Wan DiT",
                       quantized={"0": layer}, sharding=sharding)
