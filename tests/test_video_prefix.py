"""Save Wan Video: the filename prefix is refused during graph validation (VALIDATE_INPUTS, before anything runs)
and again in the engine; whatever stops a write, no partial file and no new folder is left behind."""
import importlib
import os
import re

import pytest
import torch

BAD = {
    "a" * 1001: "at most 1000 characters",
    "video/\0Wan": r"contains '\\x00'",
    "clip\nname": r"contains '\\n'",
    "a\x7fb": r"contains '\\x7f'",
    "../escape": "absolute paths and '..'",
    "/etc/cron.d/x": "absolute paths and '..'",
    "C:/x": "contains ':'",
    "video/CON": "reserved device name",
    "nul.mp4": "reserved device name",
    "Com1 ": "reserved device name",
    "x" * 181: "longer than 180 bytes",
    "é" * 91: "longer than 180 bytes",
    "/".join(["d"] * 17): "use at most 15",
    ".hidden/Wan": "starts with '.'",
    "video./Wan": "ends with a space or '.'",
    "a|b": "contains '|'",
}


@pytest.fixture
def nodes(pack):
    return importlib.import_module(pack.__name__ + ".nodes.video")


@pytest.mark.parametrize("prefix", list(BAD))
def test_bad_prefixes_fail_validation_and_saving(nodes, models_dir, prefix):
    verdict = nodes.WanExpertsSaveVideo.VALIDATE_INPUTS(filename_prefix=prefix)
    assert verdict is not True
    assert re.search(BAD[prefix], verdict), verdict
    with pytest.raises(ValueError, match=re.escape(verdict)):
        nodes.WanExpertsSaveVideo().save(torch.zeros(2, 16, 16, 3), filename_prefix=prefix)
    assert not os.path.exists(os.environ["WAN_EXPERTS_OUTPUT"])


@pytest.mark.parametrize("prefix", ["video/Wan", "Wan", "a/b/c/clip 01", "ünïcode/ビデオ", "x" * 180, None])
def test_good_prefixes_pass_validation(nodes, prefix):
    assert nodes.WanExpertsSaveVideo.VALIDATE_INPUTS(filename_prefix=prefix) is True


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError, OSError])
def test_interrupted_write_leaves_nothing(nodes, pack, models_dir, monkeypatch, error):
    """A cancel (KeyboardInterrupt / the host's interruption exception) or any encoder error mid-write: the hidden
    partial file and the subfolders made for it are gone afterwards."""
    video = importlib.import_module(pack.__name__ + ".wan.video")
    out = os.environ["WAN_EXPERTS_OUTPUT"]
    os.makedirs(out)

    def stop_midway(pixels, path, *args):
        path.write_bytes(b"half a video")
        raise error("stopped")

    monkeypatch.setattr(video, "encode", stop_midway)
    with pytest.raises((error, OSError)):
        nodes.WanExpertsSaveVideo().save(torch.zeros(2, 16, 16, 3), filename_prefix="deep/sub/Wan")
    assert os.listdir(out) == []
