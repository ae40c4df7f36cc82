"""File inputs from a graph (tokenizer, step-cache data) stay inside the model folders: FIFOs, devices, links that
lead out, absolute paths and '..' are refused at once, all with the same message; side files are read only as
size-capped regular files (oracle for "at once": a FIFO that no one writes to would block ``open`` forever)."""
import importlib
import json
import os
import time

import pytest
import torch

import test_encoders_support as sup
from wan.encoders.tokenizer_source import tokenizer_from_path
from wan.errors import CheckpointError, InputError
from wan.weights.files import read_regular_file

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


@pytest.fixture
def files(pack):
    return importlib.import_module(pack.__name__ + ".nodes.files")


@pytest.fixture
def PackInputError(pack):
    """The node tests' InputError: the pack's own module tree (see conftest.import_pack)."""
    return importlib.import_module(pack.__name__ + ".wan.errors").InputError


@pytest.fixture
def folder(models_dir, tmp_path):
    """text_encoders with a good tokenizer, a FIFO, a link to /dev/zero and a link to a file outside."""
    root = models_dir / "text_encoders"
    (root / "google").mkdir()
    (root / "google" / "spiece.model").write_bytes(sup.train_spiece())
    os.mkfifo(root / "fifo.model")
    os.symlink("/dev/zero", root / "zero.model")
    outside = tmp_path / "outside.model"
    outside.write_bytes(b"secret")
    os.symlink(outside, root / "outside.model")
    return root


HOSTILE = ["fifo.model", "zero.model", "outside.model", "missing.model", "/dev/zero", "/dev/urandom", "/etc/passwd",
           "../outside.model", "google/../../outside.model", "google/\0x.model", "C:/x.model", "", 7]


def test_only_regular_files_inside_the_folder_are_listed(files, folder):
    assert files.list_files("text_encoders", (".model",), 1 << 20) == ["google/spiece.model"]
    assert files.confined_file("text_encoders", "google/spiece.model", "tokenizer", 1 << 20) == \
        (folder / "google" / "spiece.model").resolve()


@pytest.mark.parametrize("name", HOSTILE)
def test_every_refusal_reads_the_same_and_is_immediate(files, folder, name, PackInputError):
    start = time.perf_counter()
    with pytest.raises(PackInputError) as info:
        files.confined_file("text_encoders", name, "tokenizer", 1 << 20)
    assert time.perf_counter() - start < 0.5
    shown = name.replace("\0", "?") if isinstance(name, str) else repr(name)
    assert str(info.value) == (f"tokenizer '{shown}' is not available: pick a file from the list; it must be a "
                               f"regular file of at most 1 MB inside '{folder}' (links may not lead outside)")


def test_size_cap(files, folder, PackInputError):
    (folder / "big.model").write_bytes(b"x" * (2 << 20))
    with pytest.raises(PackInputError, match="'big.model' is not available"):
        files.confined_file("text_encoders", "big.model", "tokenizer", 1 << 20)


def test_text_encoder_node_takes_a_tokenizer_from_the_list(pack, folder, models_dir, PackInputError):
    nodes = importlib.import_module(pack.__name__ + ".nodes.encoders")
    sup.save_comfy_t5(sup.hf_umt5(), None, models_dir / "text_encoders" / "t5_no_tokenizer.safetensors")
    choices = nodes.WanExpertsLoadTextEncoder.INPUT_TYPES()["optional"]["tokenizer"][0]
    assert choices == ["auto", "google/spiece.model"]
    (encoder,) = nodes.WanExpertsLoadTextEncoder().load("t5_no_tokenizer.safetensors", "fp32", "cpu", False,
                                                        "google/spiece.model")
    assert encoder.tokenizer.ids("a cat")[-1] == encoder.tokenizer.backend.eos_id
    for name in ("fifo.model", "/dev/urandom", "../outside.model"):
        with pytest.raises(PackInputError, match="is not available: pick a file from the list"):
            nodes.WanExpertsLoadTextEncoder().load("t5_no_tokenizer.safetensors", "fp32", "cpu", False, name)


def test_step_cache_nodes_take_files_from_their_folder(pack, models_dir, PackInputError):
    nodes = importlib.import_module(pack.__name__ + ".nodes.cache")
    folder = models_dir / "wan_step_cache"
    folder.mkdir()
    curve = {"curves": {"wan21_t2v_1.3b": {"steps": 3, "ratios": [1.0, 1.0, 0.9, 0.9]}}}
    (folder / "mine.json").write_text(json.dumps(curve))
    os.mkfifo(folder / "fifo.json")
    assert nodes.WanExpertsMagCache.INPUT_TYPES()["optional"]["curve_file"][0] == ["none", "mine.json"]
    (cache,) = nodes.WanExpertsMagCache().make(0.1, curve_file="mine.json")
    assert cache.curve == str((folder / "mine.json").resolve())
    for bad in ("fifo.json", "/dev/zero", "../x.json"):
        with pytest.raises(PackInputError, match="step-cache data file .* is not available"):
            nodes.WanExpertsMagCache().make(0.1, curve_file=bad)
    for bad in ("/etc/passwd", "/tmp/fifo.json", "../mine.json"):  # a published-set name that is a path
        with pytest.raises(PackInputError, match="is unknown; choose 'auto'"):
            nodes.WanExpertsTeaCache().make(0.1, coefficients=bad)


def test_engine_reads_side_files_safely(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    start = time.perf_counter()
    for path in (tmp_path / "fifo.json", "/dev/zero", tmp_path):
        with pytest.raises(InputError, match="must be an existing regular file of at most 1 MB"):
            read_regular_file(path, 1 << 20, "side file")
    assert time.perf_counter() - start < 0.5
    (tmp_path / "big").write_bytes(b"x" * 2048)
    with pytest.raises(InputError, match="too large"):
        read_regular_file(tmp_path / "big", 1024, "side file")
    assert read_regular_file(tmp_path / "big", 2048, "side file") == b"x" * 2048


def test_malformed_tokenizer_json_and_model(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram", "vocab": [[')
    with pytest.raises(CheckpointError, match="is not a valid tokenizer.json"):
        tokenizer_from_path(tmp_path / "tokenizer.json")
    (tmp_path / "spiece.model").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="is not a sentencepiece model"):
        tokenizer_from_path(tmp_path / "spiece.model")
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(InputError, match="regular file"):
        tokenizer_from_path(tmp_path / "fifo.json")


def test_weights_loader_refuses_a_fifo(tmp_path):
    import wan

    for name in ("model.safetensors", "model.gguf"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(CheckpointError, match="is not a regular file"):
            wan.load_dit(tmp_path / name)


def test_standalone_model_names_stay_in_their_folder(pack, models_dir):
    host = pack.nodes.host
    (models_dir / "vae" / "v.safetensors").write_bytes(b"")
    assert host.model_path("vae", "v.safetensors").endswith("v.safetensors")
    for name in ("/etc/passwd", "../../etc/passwd", "/dev/zero"):
        with pytest.raises(FileNotFoundError, match="was not found in the vae folder"):
            host.model_path("vae", name)
    os.mkfifo(models_dir / "vae" / "fifo.safetensors")
    with pytest.raises(FileNotFoundError):
        host.model_path("vae", "fifo.safetensors")
    assert torch.device(host.compute_device()).type in ("cpu", "cuda")


def test_links_an_admin_placed_are_used_but_side_file_links_may_not_lead_out(pack, files, folder, models_dir,
                                                                             tmp_path, PackInputError):
    """README 'Security': a model file that is a link (a Hugging Face cache blob) and a model folder that is a link
    are used as they are; a side file named by a graph must still resolve inside the model folders."""
    host = pack.nodes.host
    blob = tmp_path / "blobs" / "abc123"
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    os.symlink(blob, models_dir / "vae" / "linked.safetensors")
    assert os.path.realpath(host.model_path("vae", "linked.safetensors")) == str(blob.resolve())
    disk = tmp_path / "other_disk"
    (disk / "google").mkdir(parents=True)
    (disk / "google" / "spiece.model").write_bytes(sup.train_spiece())
    os.symlink(disk, folder / "mounted")  # a sub-folder that is a link: its files resolve outside the folder
    with pytest.raises(PackInputError, match="links may not lead outside"):
        files.confined_file("text_encoders", "mounted/google/spiece.model", "tokenizer", 1 << 20)
