"""Which model a prompt-extension call uses, and where a local Qwen model folder is.

Names as the official ``generate.py`` takes them: the official short names (``Qwen2.5_14B``, ``QwenVL2.5_7B``, ...),
Hugging Face repo ids, folder names, or paths. Nothing is downloaded: a local model is a folder the user put in one
of ``model_dirs`` (``models/LLM/``), a path, or a repo already in the local Hugging Face cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checks import json_value
from ..errors import InputError
from ..weights.files import MiB, read_regular_file

METHODS = ("local_qwen", "dashscope")  # official names; local_qwen is the official default
# QwenPromptExpander.model_dict of the official code
OFFICIAL_LOCAL_MODELS = {
    "QwenVL2.5_3B": "Qwen/Qwen2.5-VL-3B-Instruct",
    "QwenVL2.5_7B": "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen2.5_3B": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen2.5_7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen2.5_14B": "Qwen/Qwen2.5-14B-Instruct",
}
# (method, with images) -> the official default model
DEFAULT_MODELS = {
    ("dashscope", False): "qwen-plus",
    ("dashscope", True): "qwen-vl-max",
    ("local_qwen", False): "Qwen2.5_14B",
    ("local_qwen", True): "QwenVL2.5_7B",
}
CONFIG_LIMIT = MiB  # a model's config.json is a few kB
KIND_HINT = ("Text-to-video prompts use a Qwen2.5 instruct model (Qwen2.5-3B/7B/14B-Instruct); prompts with an image "
             "use Qwen2.5-VL (Qwen2.5-VL-3B/7B-Instruct).")


@dataclass(frozen=True)
class LocalModel:
    path: str  # the model folder
    vision: bool  # a Qwen-VL model (takes images)


def default_model(method: str, with_images: bool) -> str:
    return DEFAULT_MODELS[(method, with_images)]


def find_local_model(name: str, model_dirs, with_images: bool, paths: bool = True) -> LocalModel:
    """The folder of ``name``; InputError naming the folder to create and the model to put there. ``paths``: a
    name may also be a folder path (else only folders inside ``model_dirs`` and the Hugging Face cache count)."""
    repo = OFFICIAL_LOCAL_MODELS.get(name, name)
    folder = _existing_folder(name, repo, [Path(d) for d in model_dirs], paths)
    if folder is None:
        raise InputError(_missing_message(name, repo, [Path(d) for d in model_dirs]))
    vision = _is_vision_model(folder)
    if with_images and not vision:
        raise InputError(f"Prompt-extension model '{name}' ({folder}) is a text-only model, but an image was given. "
                         f"Use a Qwen2.5-VL model (e.g. Qwen2.5-VL-7B-Instruct) or leave the image out.")
    return LocalModel(str(folder), vision)


def _existing_folder(name: str, repo: str, dirs: list[Path], paths: bool = True) -> Path | None:
    candidates = [Path(name).expanduser()] if paths else []
    for d in dirs:
        candidates += [d / name, d / repo.split("/")[-1]]
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    return _cached_repo(repo) if "/" in repo else None


def _cached_repo(repo: str) -> Path | None:
    """A repo the Hugging Face cache already holds (the official code downloads there); no network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _is_vision_model(folder: Path) -> bool:
    what = f"Prompt-extension model '{folder.name}': config.json"
    config = json_value(read_regular_file(folder / "config.json", CONFIG_LIMIT, what), what)
    if not isinstance(config, dict):
        raise InputError(f"{what} holds a JSON {type(config).__name__}, not the model's settings; download the "
                         f"model folder again")
    return "vision_config" in config


def _missing_message(name: str, repo: str, dirs: list[Path]) -> str:
    home = dirs[0] if dirs else Path("models") / "LLM"
    if "/" in repo:
        where = (f"Download {repo} (https://huggingface.co/{repo}) and put the folder at "
                 f"'{home / repo.split('/')[-1]}'")
    else:
        where = f"Put the model folder (config.json, tokenizer and weights) at '{home / name}', or give its full path"
    return f"Prompt-extension model '{name}' was not found. {where}. {KIND_HINT}"
