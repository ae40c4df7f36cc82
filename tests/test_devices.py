"""Device names: a model on ``cuda:0`` is already on ``cuda`` (so no move and no log line every step)."""
import torch

from wan.memory.devices import module_device, same_device


def test_same_device_ignores_a_missing_index():
    assert same_device("cuda", "cuda:0") and same_device(torch.device("cuda:1"), "cuda")
    assert not same_device("cuda:0", "cuda:1") and not same_device("cpu", "cuda")
    assert same_device("cpu", torch.device("cpu"))


def test_module_device_of_a_module_without_parameters_is_cpu():
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")
    assert module_device(torch.nn.Linear(2, 2, device="meta")).type == "meta"
