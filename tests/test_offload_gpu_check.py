"""``benchmarks/gpu.py`` (the one-command GPU check) on a machine without CUDA: one line, exit status 0."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the whole benchmark")
def test_gpu_check_skips_cleanly_without_cuda(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "skipped" in lines[0]
    assert not (tmp_path / "r.json").exists()
