"""Wan Animate in several processes gives the single-process result. One launch of 2 CPU processes (gloo on
loopback):

- the Animate DiT under Ulysses sequence parallelism (official ``use_context_parallel``): the video tokens (pose
  added) split over the ranks, the uneven split padded, each face adapter block attending with the queries of the
  whole sequence gathered and keeping its own slice; once with the weights whole on every rank, once sharded
  (``--dit_fsdp``: each face adapter block its own FSDP unit, the motion and face encoders with the root). Oracle: the
  same tiny DiT (``tiny_animate``, random weights in the official names) in this pytest process, itself checked
  against the official ``WanAnimateModel`` in test_animate_dit.py. Tolerance: max|difference| <= 1e-5 of the largest
  reference value (the split changes only the summation order of matmuls); both ranks identical."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import wan
from tiny_animate import animate_inputs, official_animate
from tiny_dit import save_safetensors, state_dict_of
from wan.dit.animate import AnimateInputs

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


def _rank(rank: int, world: int, port: int, path: str, out: str) -> None:
    from wan.distributed import ParallelOptions
    from wan.distributed.plan import Parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for name, options in (("ulysses", ParallelOptions(ulysses_size=world)),
                          ("fsdp", ParallelOptions(ulysses_size=world, dit_fsdp=True))):
        par = Parallel.build(options, "cpu")
        model = wan.load_dit(path, sharding=par.dit_sharding("cpu"))
        par.attach([model])
        results[name] = [_forward(model, case) for case in CASES]
    dist.destroy_process_group()
    torch.save(results, f"{out}/rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    return save_safetensors(state_dict_of(official_animate(seed=4)),
                            tmp_path_factory.mktemp("animate_sp") / "animate.safetensors")


@pytest.fixture(scope="module")
def two(dit_file, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("animate_ranks")
    ctx = mp.start_processes(_rank, args=(2, _free_port(), str(dit_file), str(out)), nprocs=2, join=False,
                             start_method="spawn")
    for _ in range(TIMEOUT):
        if ctx.join(timeout=1):
            break
    else:
        for p in ctx.processes:
            p.kill()
        pytest.fail(f"2 processes did not finish within {TIMEOUT} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("mode", ["ulysses", "fsdp"])
def test_dit_forward_in_two_processes_matches_one(dit_file, two, mode):
    ranks = [r[mode] for r in two]
    model = wan.load_dit(dit_file)
    assert model.sequence_parallel is None
    for i, case in enumerate(CASES):
        ref = _forward(model, case)
        assert torch.equal(ranks[0][i], ranks[1][i]), f"case {case}: the ranks disagree"
        assert ranks[0][i].shape == ref.shape
        assert (ranks[0][i] - ref).abs().max() <= 1e-5 * ref.abs().max(), f"case {case}"
