"""Wan Animate in several processes gives the single-process result. One launch of 2 CPU processes (gloo on
loopback):

- the Animate DiT under Ulysses sequence parallelism (official ``use_context_parallel``): the video tokens (pose
  added) split over the ranks, the uneven split padded, each face adapter block attending with the queries of the
  whole sequence gathered and keeping its own slice; once with the weights whole on every rank, once sharded
  (``--dit_fsdp``: each face adapter block its own FSDP unit, the motion and face encoders with the root). Oracle: the
  same tiny DiT (``tiny_animate``, random weights in the official names) in this pytest process, itself checked
  against the official ``WanAnimateModel`` in test_animate_dit.py. Tolerance: max|difference| <= 1e-5 of the largest
  reference value (the split changes only the summation order of matmuls); both ranks identical.
- the CLI under torchrun's variables, ``--task animate-14B --demo --ulysses_size 2 --dit_fsdp --t5_fsdp``: rank 0
  writes the video, the other rank nothing; the frames it hands to the video writer (floats in [0, 1]) match those
  of the same command in one process within 1e-4 (the mp4 files are not compared byte for byte: the lossy encoder
  turns a last-bit difference of one pixel into a different block decision)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

import pytest
import torch
import torch.distributed as dist

import wan
from spawn import assert_ranks_match, launch_two, run_parallel_cli
from tiny_animate import animate_inputs, official_animate
from tiny_dit import save_safetensors, state_dict_of
from wan.dit.animate import AnimateInputs
from wan.generate import main

TIMEOUT = 300
# (latent frames, h, w, t, unconditional face): 72 tokens (the split inside latent frame 1), 40 (at a frame
# boundary), 45 (inside a frame, rank 1 padded)
CASES = [(3, 8, 12, 937.0, False), (2, 8, 10, 412.0, True), (3, 6, 10, 250.0, False)]


def _forward(model, case):
    frames, h, w, t, uncond = case
    x, y, ctx, clip, pose, face = animate_inputs(latent_frames=frames, h=h, w=w, seed=frames + h)
    cond = AnimateInputs(pose, face)
    with torch.no_grad():
        return model(x, torch.tensor([t]), ctx, clip_fea=clip, y=y, animate=cond.unconditional() if uncond else cond)


CLI = ["--demo", "--task", "animate-14B", "--sample_steps", "2", "--base_seed", "5", "--device", "cpu"]


def _rank(rank: int, world: int, ports: tuple[int, int], path: str, out: str) -> None:
    from wan.distributed import ParallelOptions
    from wan.distributed.plan import Parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=world)
    results = {}
    for name, options in (("ulysses", ParallelOptions(ulysses_size=world)),
                          ("fsdp", ParallelOptions(ulysses_size=world, dit_fsdp=True))):
        par = Parallel.build(options, "cpu")
        model = wan.load_dit(path, sharding=par.dit_sharding("cpu"))
        par.attach([model])
        results[name] = [_forward(model, case) for case in CASES]
    dist.destroy_process_group()
    results["cli"] = run_parallel_cli(_main_keeping_frames, CLI, rank, world, ports[1], out)
    results["frames"] = _main_keeping_frames.frames
    torch.save(results, f"{out}/rank{rank}.pt")


def _main_keeping_frames(argv: list[str]) -> int:
    """``main(argv)``, keeping the frames handed to ``write_video`` for ``--save_file`` (not those of the demo's
    driving videos) in ``_main_keeping_frames.frames`` (None if it was not written)."""
    import wan.video

    write, kept, target = wan.video.write_video, {}, Path(argv[argv.index("--save_file") + 1])
    wan.video.write_video = lambda frames, path, *a, **kw: (kept.update({Path(path): frames.clone()}),
                                                            write(frames, path, *a, **kw))[1]
    try:
        return main(argv)
    finally:
        wan.video.write_video = write
        _main_keeping_frames.frames = kept.get(target)


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    return save_safetensors(state_dict_of(official_animate(seed=4)),
                            tmp_path_factory.mktemp("animate_sp") / "animate.safetensors")


@pytest.fixture(scope="module")
def two(dit_file, tmp_path_factory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("animate_ranks")
    return launch_two(_rank, dit_file, out, TIMEOUT), out


@pytest.mark.parametrize("mode", ["ulysses", "fsdp"])
def test_dit_forward_in_two_processes_matches_one(dit_file, two, mode):
    ranks = [r[mode] for r in two[0]]
    model = wan.load_dit(dit_file)
    assert model.sequence_parallel is None
    assert_ranks_match(ranks, _forward, model, CASES, "case")


def test_cli_video_of_rank_0_equals_the_single_process_video(two, tmp_path):
    ranks, out = two
    assert [r["cli"] for r in ranks] == [0, 0]
    assert (out / "video0.mp4").is_file() and not (out / "video1.mp4").exists()  # only rank 0 writes
    assert ranks[1]["frames"] is None
    assert _main_keeping_frames(CLI + ["--save_file", str(tmp_path / "single.mp4")]) == 0
    ours, ref = ranks[0]["frames"], _main_keeping_frames.frames
    assert ours.shape == ref.shape and ours.shape[0] > 1
    assert (ours - ref).abs().max() <= 1e-4
    assert _frames(out / "video0.mp4").shape == _frames(tmp_path / "single.mp4").shape


def test_cfg_parallel_and_relighting_lora_with_fsdp_are_refused():
    """Named before any model loads (one process refuses any multi-process flag first, see
    test_distributed_cli.py, so the check is called directly)."""
    from types import SimpleNamespace

    from wan.distributed import ParallelOptions
    from wan.errors import InputError
    from wan.runner.animate import refuse_parallel_flags

    def settings(options, lora=False):
        return SimpleNamespace(parallel=options, animate=SimpleNamespace(relighting_lora=lora))

    with pytest.raises(InputError, match="--cfg_parallel does not apply to animate-14B .* --ulysses_size N"):
        refuse_parallel_flags(settings(ParallelOptions(ulysses_size=1, cfg_parallel=True)))
    with pytest.raises(InputError, match="--use_relighting_lora cannot be combined with --dit_fsdp"):
        refuse_parallel_flags(settings(ParallelOptions(dit_fsdp=True), lora=True))
    refuse_parallel_flags(settings(ParallelOptions(ulysses_size=2), lora=True))  # Ulysses alone takes the LoRA


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
