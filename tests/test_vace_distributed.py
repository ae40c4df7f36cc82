"""The VACE DiT in several processes gives the single-process result. One launch of 2 CPU processes (gloo on
loopback):

- Ulysses sequence parallelism: the VACE tokens are split over the ranks like the video tokens (the same slice,
  zero padding at the end), every VACE block and its hint run on the local slice, self-attention exchanges the
  tokens; a context with a reference frame (the first latent frame), token counts divisible by 2 and not (padding).
- FSDP (``--dit_fsdp``): the VACE blocks are FSDP units of their own; alone and with Ulysses.
- the CLI under torchrun's variables, ``--task vace-1.3B --demo --ulysses_size 2 --dit_fsdp --t5_fsdp``: rank 0
  writes the video, the other rank nothing; its frames equal those of the same command in one process (both on one
  thread per process: the random-weight demo is chaotic enough that another thread count's summation order moves
  some pixels).

Oracle: the same tiny VACE DiT (``tiny_vace``, random weights in the official names) in this pytest process,
itself checked against the official ``VaceWanModel`` and diffusers in test_vace_dit.py. Tolerance: max|difference|
<= 1e-5 of the largest reference value (the splits change only the summation order of matmuls); ranks identical."""
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
from tiny_vace import official_vace, vace_inputs
from wan.dit.vace import VaceInputs
from wan.generate import main

TIMEOUT = 300
# (latent frames incl. the reference frame, h, w, t, strength): 3x4x6 = 72 tokens, 2x3x5 = 30, 3x3x5 = 45 (padded)
CASES = [(3, 8, 12, 937.0, 1.0), (2, 6, 10, 412.0, 0.7), (3, 6, 10, 250.0, 1.3)]
MODES = {"ulysses": dict(ulysses_size=2), "fsdp": dict(dit_fsdp=True),
         "ulysses_fsdp": dict(ulysses_size=2, dit_fsdp=True)}
CLI = ["--demo", "--task", "vace-1.3B", "--sample_steps", "2", "--base_seed", "3", "--device", "cpu"]


def _forward(model, case):
    frames, h, w, t, strength = case
    x, ctx, vace = vace_inputs(frames=frames, h=h, w=w, seed=frames + h)
    with torch.no_grad():
        return model(x, torch.tensor([t]), ctx, vace=VaceInputs(vace, strength, ref_frames=1))


def _rank(rank: int, world: int, ports: tuple[int, int], path: str, out: str) -> None:
    from wan.dit.loader import load_dit
    from wan.distributed import ParallelOptions
    from wan.distributed.fsdp import resident_bytes
    from wan.distributed.plan import Parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=world)
    results = {}
    for mode, options in MODES.items():
        par = Parallel.build(ParallelOptions(**options), "cpu")
        sharding = par.dit_sharding("cpu") if options.get("dit_fsdp") else None
        model = load_dit(path, dtype="fp32", sharding=sharding)
        par.attach([model])
        results[mode] = [_forward(model, case) for case in CASES]
        if sharding is not None:
            results[mode + "_bytes"] = torch.tensor(resident_bytes(model))
    dist.destroy_process_group()
    results["cli"] = run_parallel_cli(main, CLI, rank, world, ports[1], out)
    torch.save(results, f"{out}/rank{rank}.pt")


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    return save_safetensors(state_dict_of(official_vace()), tmp_path_factory.mktemp("vace_sp") / "vace.safetensors")


@pytest.fixture(scope="module")
def two(dit_file, tmp_path_factory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("vace_ranks")
    return launch_two(_rank, dit_file, out, TIMEOUT), out


@pytest.mark.parametrize("mode", list(MODES))
def test_vace_forward_in_two_processes_matches_one(dit_file, two, mode):
    ranks = [r[mode] for r in two[0]]
    model = wan.load_dit(dit_file)
    assert model.sequence_parallel is None
    assert_ranks_match(ranks, _forward, model, CASES, mode)


def test_vace_hints_change_the_output(dit_file):
    """Guards the parity above against passing with the hints ignored."""
    model = wan.load_dit(dit_file)
    frames, h, w, t, _ = CASES[0]
    with torch.no_grad():
        assert (_forward(model, CASES[0]) - _forward(model, (frames, h, w, t, 0.0))).abs().max() > 1e-3


def test_fsdp_shards_the_vace_blocks(dit_file, two):
    """Each rank holds about half of the parameter bytes, the VACE blocks included."""
    model = wan.load_dit(dit_file)
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    vace = sum(p.numel() * p.element_size() for p in model.vace_blocks.parameters())
    for r in two[0]:
        held = int(r["fsdp_bytes"])
        assert held < whole - vace  # less than everything but the VACE blocks: they are sharded too
        assert abs(held - whole / 2) <= 0.02 * whole


def test_cli_video_of_rank_0_equals_the_single_process_video(two, tmp_path):
    ranks, out = two
    assert [r["cli"] for r in ranks] == [0, 0]
    assert (out / "video0.mp4").is_file() and not (out / "video1.mp4").exists()  # only rank 0 writes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the random-weight demo video changes with the summation order
    try:
        assert main(CLI + ["--save_file", str(tmp_path / "single.mp4")]) == 0
    finally:
        torch.set_num_threads(threads)
    ours, ref = _frames(out / "video0.mp4"), _frames(tmp_path / "single.mp4")
    assert ours.shape == ref.shape and len(ours) > 1 and np.array_equal(ours, ref)


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
