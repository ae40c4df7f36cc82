"""The memory budget of a refine cascade (wan/budget/sizes.py) on a faked 24 GiB CUDA device: models on the meta
device, the free memory set by the test (as tests/test_budget.py does). The estimates themselves are pinned to
traced peaks there; here: 1080p x 81 frames of Wan 2.2 A14B with block streaming is refused with the largest size
that fits, that size does fit and one step larger does not; context windows make 1080p fit."""
import pytest
import torch

from test_budget import A14B, meta_dit
from wan.budget import check as budget
from wan.budget import estimates
from wan.budget.sizes import check_size, fits
from wan.dit.config import WanDiTConfig
from wan.experts import ExpertSet
from wan.memory.offload import set_block_streaming
from wan.variants import VARIANTS

GIB24 = 24 << 30


@pytest.fixture
def pair(monkeypatch):
    monkeypatch.setattr(budget, "available_bytes", lambda device: GIB24)
    experts = []
    for role in ("high", "low"):
        model = meta_dit(WanDiTConfig(**A14B, num_layers=40), variant=VARIANTS["wan22_t2v_a14b"], role=role)
        set_block_streaming(model, "auto")
        experts.append(model)
    return ExpertSet(*experts)


def test_1080p_81_frames_on_24_gib_is_refused_with_the_largest_size_that_fits(pair):
    cuda = torch.device("cuda")
    whole = estimates.estimate_sampling(pair, (1, 16, 21, 136, 240), cuda)
    assert dict(whole.parts)["weights"] < 2 << 30  # block streaming: the weights are not what fails
    with pytest.raises(budget.BudgetError) as info:
        check_size(pair, 1920, 1088, 81, cuda, 16, what="refine stage 2")
    message = str(info.value)
    assert message.startswith("refine stage 2 at 1920x1088, 81 frames needs about") and "only 24.0 GiB" in message
    best = message.split("that fits at 81 frames is ")[1].split(";")[0]
    w, h = (int(v) for v in best.split("x"))
    assert w % 16 == 0 and h % 16 == 0 and abs(w / h - 1920 / 1088) < 0.02
    assert fits(pair, w, h, 81, cuda, GIB24) and not fits(pair, w + 16, h + 16, 81, cuda, GIB24)
    check_size(pair, w, h, 81, cuda, 16)  # the size it names passes


def test_1080p_fits_24_gib_in_context_windows(pair):
    from wan.sampling.windows import ContextWindows

    check_size(pair, 1920, 1088, 81, torch.device("cuda"), 16, context=ContextWindows(33, 16))


def test_the_memory_host_is_asked_for_room_before_a_size_is_refused(pair, monkeypatch):
    """Inside ComfyUI the host unloads its own models when asked: then 1080p in context windows fits again."""
    from wan.memory.place import MemoryHost, set_memory_host
    from wan.sampling.windows import ContextWindows

    free, asked = [4 << 30], []

    class Host(MemoryHost):
        def make_room(self, need, device):
            asked.append(need)
            free[0] = GIB24

    monkeypatch.setattr(budget, "available_bytes", lambda device: free[0])
    previous = set_memory_host(Host())
    try:
        check_size(pair, 1920, 1088, 81, torch.device("cuda"), 16, context=ContextWindows(33, 16))
    finally:
        set_memory_host(previous)
    assert len(asked) == 1 and asked[0] > 4 << 30
