"""Speech to video in several processes gives the single-process result. One launch of 2 CPU processes (gloo on
loopback):

- the S2V DiT under Ulysses sequence parallelism (official ``use_sp``): the whole sequence (noisy, reference and
  motion tokens) split over the ranks, the boundary between the noisy tokens (timestep t) and the rest (timestep 0)
  on either rank's slice, the tokens gathered for every audio injection. Oracle: the same tiny DiT (``tiny_s2v``,
  random weights in the official names) in this pytest process, itself checked against the official
  ``WanModel_S2V`` in test_s2v_dit.py. Tolerance: max|difference| <= 1e-5 of the largest reference value (the
  split changes only the summation order of matmuls); both ranks identical.
- the CLI under torchrun's variables, ``--task s2v-14B --demo --ulysses_size 2 --dit_fsdp --t5_fsdp``: rank 0
  writes the video, the other rank nothing; its frames equal those of the same command in one process."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.distributed as dist

import wan
from spawn import assert_ranks_match, launch_two, run_parallel_cli
from tiny_dit import save_safetensors, state_dict_of
from tiny_s2v import official_s2v, s2v_inputs
from wan.dit.s2v import S2VInputs
from wan.generate import main

TIMEOUT = 300
# (motion latent frames, drop motion, latent frames, h, w, t): 176 tokens / 96 noisy (the boundary in rank 1's
# slice), 72 / 32 (in rank 0's), the first clip without motion tokens, no pose
CASES = [(5, False, 3, 8, 16, 937.0, True), (23, False, 2, 8, 8, 412.0, True), (5, True, 3, 8, 16, 999.0, True),
         (7, False, 1, 8, 24, 250.0, False)]


def _forward(model, case):
    motion_frames, drop, frames, h, w, t, with_pose = case
    x, ctx, ref, motion, pose, audio = s2v_inputs(frames=frames, h=h, w=w, motion_frames=motion_frames)
    with torch.no_grad():
        return model(x, torch.tensor([t]), ctx, s2v=S2VInputs(audio, ref, motion, pose if with_pose else None, drop))


CLI = ["--demo", "--task", "s2v-14B", "--infer_frames", "8", "--num_clip", "1", "--sample_steps", "2",
       "--base_seed", "5", "--device", "cpu"]


def _rank(rank: int, world: int, ports: tuple[int, int], path: str, out: str) -> None:
    from wan.distributed import ParallelOptions
    from wan.distributed.plan import Parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=world)
    model = wan.load_dit(path)
    Parallel.build(ParallelOptions(ulysses_size=world), "cpu").attach([model])
    results = {"forward": [_forward(model, case) for case in CASES]}
    dist.destroy_process_group()
    results["cli"] = run_parallel_cli(main, CLI, rank, world, ports[1], out)
    torch.save(results, f"{out}/rank{rank}.pt")


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    return save_safetensors(state_dict_of(official_s2v()), tmp_path_factory.mktemp("s2v_sp") / "s2v.safetensors")


@pytest.fixture(scope="module")
def two(dit_file, tmp_path_factory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("s2v_ranks")
    return launch_two(_rank, dit_file, out, TIMEOUT), out


def test_dit_forward_in_two_processes_matches_one(dit_file, two):
    ranks = [r["forward"] for r in two[0]]
    model = wan.load_dit(dit_file)
    assert model.sequence_parallel is None
    assert_ranks_match(ranks, _forward, model, CASES, "case")


def test_cli_video_of_rank_0_equals_the_single_process_video(two, tmp_path):
    ranks, out = two
    assert [r["cli"] for r in ranks] == [0, 0]
    assert (out / "video0.mp4").is_file() and not (out / "video1.mp4").exists()  # only rank 0 writes
    assert main(CLI + ["--save_file", str(tmp_path / "single.mp4")]) == 0
    ours, ref = _frames(out / "video0.mp4"), _frames(tmp_path / "single.mp4")
    assert ours.shape == ref.shape == (5, 64, 64, 3) and np.array_equal(ours, ref)


def test_cfg_parallel_is_refused_for_s2v():
    """Under torchrun (one process here refuses any multi-process flag first, see test_distributed_cli.py)."""
    from wan.errors import InputError
    from wan.generate import build_parser
    from wan.runner.s2v import s2v_options

    with pytest.raises(InputError, match="--cfg_parallel does not apply to s2v-14B .* --ulysses_size N"):
        s2v_options(build_parser().parse_args(CLI + ["--cfg_parallel"]), 64, 64)


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_context_windows_are_refused_for_s2v(dit_file):
    """S2V makes long videos clip by clip; the official code has no context windows for it: refused by name before
    any step runs."""
    from wan.conditioning import TextEmbeds
    from wan.errors import InputError
    from wan.sampling import SamplerSettings, sample
    from wan.sampling.windows import ContextWindows

    model = wan.load_dit(dit_file)
    x, ctx, ref, motion, pose, audio = s2v_inputs(frames=3)
    settings = SamplerSettings(steps=2, shift=3.0, context=ContextWindows(context_frames=5, context_overlap=4))
    with pytest.raises(InputError, match="context windows do not apply to speech-to-video.*Wan Context Windows"):
        sample(model, torch.zeros_like(x), TextEmbeds(ctx, ctx), settings, noise=torch.randn_like(x),
               s2v=S2VInputs(audio, ref, motion, pose))
