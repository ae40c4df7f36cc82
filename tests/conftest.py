"""Shared test setup: deterministic, few threads (CI has 2 cores), quiet official-code warnings."""
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
warnings.filterwarnings("ignore", message=".*torch.cuda.amp.*")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """A fresh $WAN_EXPERTS_MODELS tree (nodes resolve files there when ComfyUI is absent)."""
    root = tmp_path / "models"
    for kind in ("diffusion_models", "text_encoders", "vae", "clip_vision", "loras"):
        (root / kind).mkdir(parents=True)
    monkeypatch.setenv("WAN_EXPERTS_MODELS", str(root))
    monkeypatch.setenv("WAN_EXPERTS_OUTPUT", str(tmp_path / "output"))
    return root


def import_pack(name: str = "wan_experts"):
    """Import the pack the way ComfyUI does: the repo folder as a package under a name of the host's choosing.

    Node tests use ``wan_experts.nodes`` and pass only objects made through nodes or ``wan_experts.wan``; engine
    tests use the top-level ``wan`` package (as the CLI does). The two are separate module trees.
    """
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return import_pack()
