"""The S2V DiT under Ulysses sequence parallelism (official ``use_sp``) gives the single-process result: 2 CPU
processes (gloo on loopback) split the whole sequence (noisy, reference and motion tokens), the boundary between
the noisy tokens (timestep t) and the rest (timestep 0) falling on either rank's slice, and gather it for every
audio injection.

Oracle: the same tiny DiT (``tiny_s2v``, random weights in the official names) in this pytest process, itself
checked against the official ``WanModel_S2V`` in test_s2v_dit.py. Tolerance: max|difference| <= 1e-5 of the largest
reference value (the split changes only the summation order of matmuls); both ranks identical."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import wan
from tiny_dit import save_safetensors, state_dict_of
from tiny_s2v import official_s2v, s2v_inputs
from wan.dit.s2v import S2VInputs

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


def _rank(rank: int, world: int, port: int, path: str, out: str) -> None:
    from wan.distributed import ParallelOptions
    from wan.distributed.plan import Parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = wan.load_dit(path)
    Parallel.build(ParallelOptions(ulysses_size=world), "cpu").attach([model])
    torch.save([_forward(model, case) for case in CASES], f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    return save_safetensors(state_dict_of(official_s2v()), tmp_path_factory.mktemp("s2v_sp") / "s2v.safetensors")


def test_two_processes_match_one(dit_file, tmp_path):
    ctx = mp.start_processes(_rank, args=(2, _free_port(), str(dit_file), str(tmp_path)), nprocs=2, join=False,
                             start_method="spawn")
    for _ in range(TIMEOUT):
        if ctx.join(timeout=1):
            break
    else:
        for p in ctx.processes:
            p.kill()
        pytest.fail(f"2 processes did not finish within {TIMEOUT} s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    model = wan.load_dit(dit_file)
    assert model.sequence_parallel is None
    for i, case in enumerate(CASES):
        ref = _forward(model, case)
        assert torch.equal(ranks[0][i], ranks[1][i]), f"case {case}: the ranks disagree"
        assert ranks[0][i].shape == ref.shape
        assert (ranks[0][i] - ref).abs().max() <= 1e-5 * ref.abs().max(), f"case {case}"
