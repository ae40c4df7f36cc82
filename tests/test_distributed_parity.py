"""Several processes give the single-process result: 2 and 4 CPU processes (gloo on loopback) run the pipeline
with Ulysses sequence parallelism, guidance branches in parallel, FSDP-sharded DiT and text encoder and step
caches, on tiny random models in the official folder layout.

Oracle: the same pipeline in one process (this pytest process) on the same files, itself checked against the
official code and diffusers elsewhere. Tolerance: final latents within 1e-5 of the largest reference value (the
splits change only the summation order of matmuls); cache decisions and the written video identical. FSDP: each
rank holds 1/N of the parameter bytes (+ at most FSDP's padding of uneven rows).

Each world size is one launch (spawned processes, module-scoped), whose cases the tests below then check.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.distributed as dist

from spawn import free_port, run_ranks
from wan.runner.demo import write_official_folder
from wan.distributed.fsdp import resident_bytes
from wan.errors import InputError
from wan.generate import build_parser, main, settings_from_args
from wan.runner.pipeline import official_files, sample_latents

HEADS = 4  # the tiny DiTs (width 256) are read as 4 heads of 64, so that 4 ranks can split them
TIMEOUT = 400


@dataclass(frozen=True)
class Case:
    name: str
    task: str
    parallel: tuple[str, ...]  # the multi-process flags
    extra: tuple[str, ...] = ()
    size: str = "48*32"
    frames: int = 5
    steps: int = 3
    image: bool = False


CASES_2 = [
    # 2 latent frames x 1x3 patches = 6 tokens, 3 per rank; both experts sharded, text encoder sharded, MagCache
    Case("t2v_a14b_pair", "t2v-A14B", ("--ulysses_size", "2", "--dit_fsdp", "--t5_fsdp"),
         ("--magcache", "0.5"), size="48*16", steps=4),
    # image conditioning (y) and CLIP image tokens in the cross-attention; 2x2x3 = 12 tokens
    Case("i2v_14b", "i2v-14B", ("--ulysses_size", "2",)),
    # per-token timesteps (0 on the start frame), 3 frames x 1x3 = 9 tokens: one padding token; TeaCache on a
    # per-token time embedding (its mean is reduced over the ranks)
    Case("ti2v_5b", "ti2v-5B", ("--ulysses_size", "2", "--dit_fsdp"), ("--teacache", "1.0"), size="96*32",
         frames=9, steps=5, image=True),
    # cond on rank 0, uncond on rank 1, each with its own cache decisions
    Case("cfg_parallel", "t2v-1.3B", ("--cfg_parallel",), ("--teacache", "1.0"), steps=5),
]
CASES_4 = [
    # 4 ranks split 4 heads; 2x1x3 = 6 tokens padded to 8
    Case("ulysses4", "t2v-1.3B", ("--ulysses_size", "4", "--dit_fsdp", "--t5_fsdp"), ("--teacache", "1.0"),
         size="48*16", steps=4),
    # 2 ranks per branch share the tokens and the sharded experts; the branches skip different steps
    Case("cfg_ulysses_pair", "t2v-A14B", ("--ulysses_size", "2", "--cfg_parallel", "--dit_fsdp"),
         ("--magcache", "0.5"), steps=4),
]
VIDEO_FLAGS = ["--demo", "--task", "t2v-1.3B", "--size", "32*32", "--frame_num", "5", "--sample_steps", "2",
               "--base_seed", "11", "--device", "cpu"]


# -- what every rank runs --------------------------------------------------------------------------------------
def _settings(case: Case, folders: dict, flags: tuple[str, ...]):
    args = ["--demo", "--task", case.task, "--size", case.size, "--frame_num", str(case.frames), "--sample_steps",
            str(case.steps), "--base_seed", "7", "--device", "cpu", *case.extra, *flags]
    if case.image:
        args += ["--image", folders["image"]]
    s = settings_from_args(build_parser().parse_args(args))
    s.ckpt_dir = Path(folders[case.task])
    return s


def _latents(case: Case, folders: dict, flags: tuple[str, ...]) -> dict:
    result = sample_latents(_settings(case, folders, flags)).result
    return {"latents": result.latents, "reused": result.cache_report.reused if result.cache_report else {}}


def _sharded_bytes(folders: dict) -> dict:
    """Bytes of parameters this rank holds of both A14B experts and of the text encoder, sharded while loading."""
    from wan.encoders import load_text_encoder
    from wan.runner.pipeline import load_experts, parallel_setup

    s = _settings(CASES_2[0], folders, ("--dit_fsdp", "--t5_fsdp"))
    files = official_files(s.ckpt_dir, s.task, s.variant)
    par = parallel_setup(s, files)
    experts = load_experts(files, s, par.device, par)
    t5 = load_text_encoder(files.text_encoder, device="cpu", sharding=par.t5_sharding())
    return {"high": resident_bytes(experts.high), "low": resident_bytes(experts.low), "t5": resident_bytes(t5.model)}


def _fp8_checks(folders: dict) -> dict:
    """fp8 weights: FSDP refuses them by name; sequence parallelism alone runs them."""
    from wan.dit.loader import load_dit
    from wan.distributed import ParallelOptions
    from wan.distributed.plan import Parallel

    par = Parallel.build(ParallelOptions(ulysses_size=2, dit_fsdp=True), "cpu")
    try:
        load_dit(folders["fp8"], dtype="fp32", sharding=par.dit_sharding("cpu"))
        refusal = ""
    except InputError as exc:
        refusal = str(exc)
    model = load_dit(folders["fp8"], dtype="fp32")
    par.attach([model])
    with torch.no_grad():
        out = model(*_fp8_inputs())
    return {"refusal": refusal, "out": out}


def _fp8_inputs():
    g = torch.Generator().manual_seed(5)
    return torch.randn(1, 16, 2, 4, 6, generator=g), torch.tensor([600.0]), torch.randn(1, 20, 64, generator=g)


def _shard_checks() -> dict:
    """One forward's pieces on 5 tokens over 2 ranks (one padding token), against the same on the whole tensors
    (every rank draws the same whole tensors and takes its slice)."""
    from wan.dit.attention import sdpa
    from wan.distributed.ulysses import SequenceParallel

    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(1, 5, 8, generator=g), torch.rand(1, 5, generator=g) * 1000
    q, k, v = (torch.randn(1, 5, 4, 16, generator=g) for _ in range(3))
    tokens, t_part, _, shard = SequenceParallel(dist.group.WORLD).split(x, t, torch.ones(5, 1, 8))
    parts = [shard.split(a, dim=1) for a in (q, k, v)]
    return {"gather": shard.gather(tokens) - x, "time": shard.gather(t_part.unsqueeze(-1))[..., 0] - t,
            "mean": shard.mean(tokens) - x.mean(), "attention": shard.gather(shard.attention(sdpa)(*parts)) - sdpa(q, k, v)}


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _cli_without_loading(argv: list[str]) -> tuple[int, str]:
    """The CLI with every model loader replaced by a failure: an error must come before any model loads."""
    import wan.dit.loader
    import wan.encoders

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wan.dit.loader, "load_dit", refuse)
        patch.setattr(wan.encoders, "load_text_encoder", refuse)
        return _cli(argv)


def _rank(rank: int, world: int, ports: tuple[int, int], cases: list[Case], folders: dict, out: str,
          extras: tuple[str, ...]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=world)
    results = {case.name: _latents(case, folders, case.parallel) for case in cases}
    if "bytes" in extras:
        results["bytes"] = _sharded_bytes(folders)
    if "fp8" in extras:
        results["fp8"] = _fp8_checks(folders)
    if "shards" in extras:
        results["shards"] = _shard_checks()
    results["bad_size"] = _cli_without_loading(VIDEO_FLAGS + ["--ulysses_size", "4" if world == 4 else "3"])
    dist.destroy_process_group()
    if "video" in extras:  # last: the CLI joins (and leaves) the process group itself, as under torchrun
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[1]), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world))
        results["video_file"] = str(Path(out) / "video.mp4")
        results["video"] = _cli(VIDEO_FLAGS + ["--ulysses_size", "2", "--dit_fsdp", "--t5_fsdp", "--save_file",
                                               results["video_file"]])
    torch.save(results, Path(out) / f"rank{rank}.pt")


# -- the launch ---------------------------------------------------------------------------------------------------
def launch(world: int, cases: list[Case], folders: dict, out: Path, extras: tuple[str, ...] = ()) -> list[dict]:
    """Run ``world`` processes to the end (or fail with the first error of any of them)."""
    run_ranks(_rank, (world, (free_port(), free_port()), cases, folders, str(out), extras), world, TIMEOUT)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """Official folders of the tiny models, their DiTs read as 4 heads; a start image; an fp8 DiT file."""
    root = tmp_path_factory.mktemp("dist_models")
    out = {}
    for task, variant in (("t2v-A14B", "wan22_t2v_a14b"), ("i2v-14B", "wan21_i2v_14b"),
                          ("ti2v-5B", "wan22_ti2v_5b"), ("t2v-1.3B", "wan21_t2v_1.3b")):
        models = write_official_folder(root / variant, variant)
        for dit in models.dits:
            config = json.loads((dit / "config.json").read_text())
            (dit / "config.json").write_text(json.dumps({**config, "num_heads": HEADS}))
            _slow_time_embedding(dit / "diffusion_pytorch_model.safetensors")
        out[task] = str(root / variant)
    out["image"] = str(_write_image(root / "start.png"))
    out["fp8"] = str(_write_fp8(root / "fp8", Path(out["t2v-1.3B"])))
    return out


def _slow_time_embedding(path: Path) -> None:
    """Keep only the low-frequency half of the timestep sinusoid, so that the time embedding changes from step to
    step about as little as a trained model's does and TeaCache skips steps (random weights change it too much)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    w = sd["time_embedding.0.weight"]
    half = w.shape[1] // 2
    low = (torch.arange(half) >= half // 2).to(w.dtype)
    sd["time_embedding.0.weight"] = w * torch.cat([low, low])
    save_file(sd, str(path))


def _write_image(path: Path) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (32, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _write_fp8(folder: Path, source: Path) -> Path:
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    sd = load_file(str(source / "diffusion_pytorch_model.safetensors"))
    sd = {k: v.to(torch.float8_e4m3fn) if k.startswith("blocks.") and k.endswith("q.weight") else v
          for k, v in sd.items()}
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    shutil.copy(source / "config.json", folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def two(folders, tmp_path_factory) -> list[dict]:
    return launch(2, CASES_2, folders, tmp_path_factory.mktemp("dist2"), ("bytes", "fp8", "shards", "video"))


@pytest.fixture(scope="module")
def four(folders, tmp_path_factory) -> list[dict]:
    return launch(4, CASES_4, folders, tmp_path_factory.mktemp("dist4"))


# -- the checks ---------------------------------------------------------------------------------------------------
def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _check_case(case: Case, ranks: list[dict], folders: dict) -> None:
    ref = _latents(case, folders, ())
    for r, res in enumerate(ranks):
        assert _relative(res[case.name]["latents"], ref["latents"]) <= 1e-5, f"rank {r}"
        assert torch.equal(res[case.name]["latents"], ranks[0][case.name]["latents"]), "ranks disagree"
    reused = [res[case.name]["reused"] for res in ranks]
    if "--cfg_parallel" in case.parallel:  # the first half of the ranks ran the cond branch, the rest uncond
        half = len(ranks) // 2
        assert all(x == {"cond": ref["reused"]["cond"]} for x in reused[:half]), (reused, ref["reused"])
        assert all(x == {"uncond": ref["reused"]["uncond"]} for x in reused[half:]), (reused, ref["reused"])
    else:
        assert all(x == ref["reused"] for x in reused), (reused, ref["reused"])
    if any(flag in case.extra for flag in ("--teacache", "--magcache")):
        assert any(ref["reused"].values()), "the cache never skipped: the case does not test its decisions"


@pytest.mark.parametrize("case", CASES_2, ids=lambda c: c.name)
def test_two_processes_match_one(case, two, folders):
    _check_case(case, two, folders)


@pytest.mark.parametrize("case", CASES_4, ids=lambda c: c.name)
def test_four_processes_match_one(case, four, folders):
    _check_case(case, four, folders)


@pytest.mark.parametrize("piece", ["gather", "time", "mean", "attention"])
def test_token_slices_with_padding_add_up_to_the_whole(piece, two):
    """Oracle: the whole tensors in one process (plain mean, torch SDPA over all tokens); float32 round-off."""
    for res in two:
        assert res["shards"][piece].abs().max() <= 1e-6, piece


def test_fsdp_rank_holds_half_of_the_weights(two, folders):
    from wan.encoders import load_text_encoder
    from wan.runner.pipeline import load_experts

    s = _settings(CASES_2[0], folders, ())
    files = official_files(s.ckpt_dir, s.task, s.variant)
    experts = load_experts(files, s, torch.device("cpu"))
    whole = {"high": resident_bytes(experts.high), "low": resident_bytes(experts.low),
             "t5": resident_bytes(load_text_encoder(files.text_encoder).model)}
    for name, total in whole.items():
        held = [res["bytes"][name] for res in two]
        assert sum(held) >= total and all(abs(h - total / 2) <= 0.01 * total for h in held), (name, held, total)


def test_fsdp_refuses_fp8_weights_and_ulysses_runs_them(two, folders):
    from wan.dit.loader import load_dit

    refusal = two[0]["fp8"]["refusal"]
    assert "--dit_fsdp cannot shard weights stored as float8_e4m3fn" in refusal and "--ulysses_size" in refusal
    with torch.no_grad():
        ref = load_dit(folders["fp8"], dtype="fp32")(*_fp8_inputs())
    for res in two:
        assert _relative(res["fp8"]["out"], ref) <= 1e-5


def test_video_of_rank_0_equals_the_single_process_video(two, tmp_path):
    code, err = two[0]["video"]
    assert code == 0, err
    assert two[1]["video"] == (0, ""), "only rank 0 reports"
    single = tmp_path / "single.mp4"
    assert main(VIDEO_FLAGS + ["--save_file", str(single)]) == 0
    ours, ref = _frames(Path(two[0]["video_file"])), _frames(single)
    assert ours.shape == (5, 32, 32, 3) and np.array_equal(ours, ref)


@pytest.mark.parametrize("world, message", [
    (2, "--ulysses_size 3 = 3 processes per sample must divide the 2 processes of this run"),
    (4, "--ulysses_size 4 does not divide the 2 attention heads of t2v-1.3B"),
])
def test_bad_ulysses_size_stops_before_loading(world, message, request):
    ranks = request.getfixturevalue({2: "two", 4: "four"}[world])
    for r, res in enumerate(ranks):
        code, err = res["bad_size"]
        assert code == 2 and (message in err) == (r == 0), err


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
