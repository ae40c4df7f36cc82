"""Cancelling: the sampler's ``interrupt`` runs before every transformer block, so a cancel lands within one block
(not one whole step, here 2 blocks x 2 CFG branches); the hooks are gone after the run, cancelled or not."""
import pytest
import torch

from test_sampling_models import prompts
from tiny_dit import official_dit, save_safetensors, state_dict_of
import wan
from wan.sampling import SamplerSettings, make_noise, sample

SHAPE = (1, 16, 1, 4, 4)


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = save_safetensors(state_dict_of(official_dit("t2v")), tmp_path_factory.mktemp("c") / "t2v.safetensors")
    return wan.load_dit(path)


def count_blocks(model):
    ran = []
    handles = [b.register_forward_hook(lambda *_: ran.append(1)) for b in model.blocks]
    return ran, handles


@pytest.mark.parametrize("cancel_at", [1, 3, 6])
def test_cancel_stops_within_one_block(model, cancel_at):
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == cancel_at:
            raise Cancelled

    ran, handles = count_blocks(model)
    text = wan.TextEmbeds(prompts()[2].positive, prompts()[2].negative)
    with pytest.raises(Cancelled):
        sample(model, torch.zeros(SHAPE), text, SamplerSettings(3, 5.0), noise=make_noise(SHAPE, 0),
               interrupt=interrupt)
    for h in handles:
        h.remove()
    assert len(ran) == cancel_at - 1  # every block before the cancel ran, none after
    assert all(not b._forward_pre_hooks for b in model.blocks)


def test_no_interrupt_leaves_the_model_untouched(model):
    text = wan.TextEmbeds(prompts()[2].positive, prompts()[2].negative)
    out = sample(model, torch.zeros(SHAPE), text, SamplerSettings(1, 5.0), noise=make_noise(SHAPE, 0),
                 interrupt=lambda: None)
    assert out.latents.shape == SHAPE and all(not b._forward_pre_hooks for b in model.blocks)
