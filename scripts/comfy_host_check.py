"""Check the pack inside a real ComfyUI server, on tiny random-weight models. A manual check: CI does not run it.

    python scripts/comfy_host_check.py --comfy /path/to/ComfyUI [--python /path/to/its/python] [--only NAME]

Run it with a Python that has torch and the pack's requirements (ComfyUI's own Python will do). It makes a base
folder (``--base``, default a new temporary one) with ``models/`` holding tiny models under the file names of every
``workflows/api`` graph, ``input/`` with their images, ``output/`` and ``custom_nodes/`` with a link to this pack,
starts ``main.py --cpu --base-directory <base>`` on a free loopback port (ComfyUI's own folder is not written to)
and checks, through the HTTP API as the frontend uses it:

- the pack imports with no error or warning in the log, and every node is in ``/object_info`` with its file lists
  filled;
- every UI workflow reads against ``/object_info`` (known node types, widget values in place and in range);
- every API workflow (shrunk to tiny sizes) runs to success and writes a playable video with the prompt and the
  workflow stored in it;
- hostile graphs (non-finite numbers, bad prefixes, huge sizes, FIFO / device names as file inputs) are refused
  when queued or stop quickly with the pack's own message, and leave nothing in the output folder;
- graphs mixing core nodes (Wan Create Video into core Save Video), cancelling during sampling, the memory hand-off
  entry points (``/free``), steady memory over repeated runs, and a second server with ``--disable-metadata``;
- cache purity: the same seed again after other runs on ComfyUI's cached node outputs gives the same latents and
  images (compared losslessly through core Save Latent / Save Image);
- then ``scripts/comfy_inprocess_check.py`` on the same tiny models (memory hand-off, core bridges).

Exit status 1 when any check fails; each problem is printed. ``--keep`` leaves the base folder and its log.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    sys.path.insert(0, str(_p))

from tiny_workflows import (  # noqa: E402
    TINY, TinyModels, expected_frames, expected_size, shrink, write_images, write_models)

API_DIR = ROOT / "workflows" / "api"
PACK_LINK = "ComfyUI-WanExperts"
MODEL_KINDS = ("diffusion_models", "text_encoders", "vae", "clip_vision", "loras", "wan_step_cache", "LLM",
               "audio_encoders")
NOTE_TYPES = ("Note", "MarkdownNote")  # frontend-only nodes, never in /object_info


# -- the server ----------------------------------------------------------------------------------------------------
class Server:
    """A ComfyUI server process on a base folder, driven over HTTP."""

    def __init__(self, python: str, comfy: Path, base: Path, extra: tuple = (), name: str = "comfy"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / f"{name}.log"
        cmd = [python, str(comfy / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(base), "--preview-method", "latent2rgb", *extra]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT)
        self.client_id = uuid.uuid4().hex

    def wait_ready(self, timeout: float = 300) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def post(self, path: str, body: dict) -> tuple[int, dict | None]:
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read()
                return r.status, json.loads(text) if text.strip().startswith(b"{") else None
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text.strip().startswith(b"{") else None

    def queue(self, graph: dict, workflow: dict | None = None) -> tuple[int, dict | None]:
        body = {"prompt": graph, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", body)

    def wait(self, prompt_id: str, timeout: float = 900) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            history = self.get(f"/history/{prompt_id}")
            if history and prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, graph: dict, workflow: dict | None = None, timeout: float = 900) -> "Run":
        start = time.time()
        status, answer = self.queue(graph, workflow)
        if status != 200:
            return Run(status, answer, None, time.time() - start)
        entry = self.wait(answer["prompt_id"], timeout)
        return Run(status, answer, entry, time.time() - start)


@dataclass
class Run:
    """One queued graph: the HTTP answer to ``POST /prompt`` and its history entry once finished."""

    http_status: int
    answer: dict | None
    history: dict | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.history is not None and self.history["status"]["status_str"] == "success"

    def error(self) -> str:
        """The refusal (validation) or the execution error, as one line."""
        if self.history is None:
            return json.dumps(self.answer)[:2000]
        for kind, data in self.history["status"].get("messages", []):
            if kind in ("execution_error", "execution_interrupted"):
                return f"{kind}: {data.get('node_type')}: {data.get('exception_message', '')}".strip()
        return "no error"

    def files(self) -> list[dict]:
        """Every saved file the outputs list (``images``, ``videos``, ``gifs``, ``animated`` entries)."""
        out = []
        for node_out in (self.history or {}).get("outputs", {}).values():
            for key in ("images", "videos", "gifs"):
                out += [f for f in node_out.get(key, []) if isinstance(f, dict) and "filename" in f]
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- setup ---------------------------------------------------------------------------------------------------------
def prepare_base(base: Path) -> None:
    """Model folders with tiny models under every API workflow's file names, input images, the pack link."""
    models = base / "models"
    for kind in MODEL_KINDS:
        (models / kind).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes").mkdir(exist_ok=True)
    link = base / "custom_nodes" / PACK_LINK
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    tiny = TinyModels(base / "tiny_cache")
    for path in sorted(API_DIR.glob("*.json")):
        graph = json.loads(path.read_text())
        write_models(graph, models, tiny)
        write_images(graph, base / "input")


def api_workflows(only: str | None) -> list[Path]:
    return [p for p in sorted(API_DIR.glob("*.json")) if not only or only in p.stem]


# -- checks --------------------------------------------------------------------------------------------------------
@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        (self.notes if ok else self.problems).append(("ok    " if ok else "FAIL  ") + what)
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        return ok


def output_files(base: Path) -> set[Path]:
    out = base / "output"
    return {p for p in out.rglob("*") if p.is_file()} if out.exists() else set()


def pack_classes() -> dict:
    """The pack's node classes, imported as ComfyUI imports it (a package under a name of its own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wan_experts_hostcheck", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return dict(module.NODE_CLASS_MAPPINGS)


def check_import(server: Server, report: Report) -> None:
    log = server.log()
    ours = [line for line in log.splitlines() if PACK_LINK in line or "wan_experts" in line.lower()
            or "Wan Experts" in line]
    bad = [line for line in ours if any(w in line for w in ("Traceback", "Error", "IMPORT FAILED", "Cannot import",
                                                            "WARNING", "warning"))]
    report.check(not bad, f"pack imports cleanly ({len(ours)} log lines mention it){': ' + '; '.join(bad) if bad else ''}")
    report.check("IMPORT FAILED" not in log or PACK_LINK not in log.split("IMPORT FAILED", 1)[1][:400],
                 "pack not listed under IMPORT FAILED")


def check_object_info(server: Server, report: Report, classes: dict) -> dict:
    info = server.get("/object_info")
    missing = sorted(set(classes) - set(info))
    report.check(not missing, f"all {len(classes)} pack nodes in /object_info{': missing ' + str(missing) if missing else ''}")
    for node_id in sorted(set(classes) & set(info)):
        spec = info[node_id]
        problems = [w for w, bad in (("no description", not spec.get("description")),
                                     ("category", not spec.get("category", "").startswith("Wan Experts/")),
                                     ("display name", spec.get("display_name") in (None, "", node_id))) if bad]
        for section in ("required", "optional"):
            for name, entry in spec["input"].get(section, {}).items():
                options = entry[1] if len(entry) > 1 else {}
                if not options.get("tooltip"):
                    problems.append(f"no tooltip on {name}")
                if isinstance(entry[0], list) and not entry[0]:
                    problems.append(f"empty list {name}")
        report.check(not problems, f"/object_info {node_id}{': ' + ', '.join(problems) if problems else ''}")
    return info


def check_file_lists(info: dict, report: Report) -> None:
    """Every file name the API workflows pick is offered by the node's list."""
    for path in api_workflows(None):
        graph = json.loads(path.read_text())
        missing = []
        for node in graph.values():
            spec = info.get(node["class_type"], {}).get("input", {})
            for name, value in node["inputs"].items():
                entry = {**spec.get("required", {}), **spec.get("optional", {})}.get(name)
                if entry and isinstance(entry[0], list) and isinstance(value, str) and value not in entry[0]:
                    missing.append(f"{node['class_type']}.{name}={value}")
        report.check(not missing, f"file lists offer what {path.stem} picks{': ' + ', '.join(missing) if missing else ''}")


def check_ui_workflows(info: dict, report: Report) -> None:
    """The UI workflows read against the server's node definitions (``tests/workflow_check``), file lists included."""
    from workflow_check import check_workflow

    class Spec:
        def __init__(self, entry):
            self.entry = entry
            self.RETURN_TYPES = tuple(entry["output"])

        def INPUT_TYPES(self):
            return {k: v for k, v in self.entry["input"].items() if k != "hidden"}

    mappings = {name: Spec(entry) for name, entry in info.items()}
    for path in sorted((ROOT / "workflows").glob("*.json")):
        workflow = json.loads(path.read_text())
        unknown = [n["type"] for n in workflow["nodes"] if n["type"] not in info and n["type"] not in NOTE_TYPES]
        problems = check_workflow(workflow, mappings, set()) + [f"unknown node type {t}" for t in unknown]
        report.check(not problems, f"UI workflow {path.stem} against /object_info{': ' + '; '.join(problems) if problems else ''}")
        twin = API_DIR / path.name
        if twin.exists():
            differ = _widget_inputs_differ(workflow, json.loads(twin.read_text()), info)
            report.check(not differ, f"UI workflow {path.stem} read in /object_info's input order gives its API twin's "
                                     f"values{': ' + '; '.join(differ) if differ else ''}")


def _widget_inputs_differ(workflow: dict, api: dict, info: dict) -> list[str]:
    """Each node's ``widgets_values`` placed on the widgets in ``input_order`` (as the frontend does), against the
    API twin's literal inputs."""
    from workflow_check import widget_slots

    out = []
    for node in workflow["nodes"]:
        entry = info.get(node["type"])
        if entry is None or str(node["id"]) not in api:
            continue
        order = entry.get("input_order", {k: list(v) for k, v in entry["input"].items() if k != "hidden"})
        ordered = {sec: {n: entry["input"][sec][n] for n in names} for sec, names in order.items() if sec != "hidden"}
        slots = widget_slots(ordered)
        read = {sl.input: v for sl, v in zip(slots, node.get("widgets_values", [])) if sl.kind == "value"}
        literal = {k: v for k, v in api[str(node["id"])]["inputs"].items() if not isinstance(v, list)}
        if read != literal:
            out.append(f"node {node['id']} {node['type']}: {read} vs {literal}")
    return out


def check_api_workflows(server: Server, base: Path, report: Report, only: str | None) -> None:
    import av

    for path in api_workflows(only):
        graph = shrink(json.loads(path.read_text()))
        ui_path = ROOT / "workflows" / path.name
        workflow = json.loads(ui_path.read_text()) if ui_path.exists() else None
        run = server.run(graph, workflow)
        if not report.check(run.ok, f"{path.stem} runs ({run.seconds:.1f} s){'' if run.ok else ': ' + run.error()}"):
            continue
        files = run.files()
        if not report.check(len(files) == 1, f"{path.stem}: one file listed, got {files}"):
            continue
        file = base / "output" / files[0]["subfolder"] / files[0]["filename"]
        with av.open(str(file)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            meta = dict(container.metadata)
        shape_ok = len(frames) == expected_frames(graph) and frames[0].shape[:2] == expected_size(graph)
        report.check(shape_ok, f"{path.stem}: {len(frames)} frames of {frames[0].shape[:2]} in {file.name}")
        stored = json.loads(meta.get("prompt", "null")) or {}
        for node in stored.values():
            node.pop("is_changed", None)  # added by ComfyUI to nodes with IS_CHANGED (LoadImage)
        report.check(stored == graph and "workflow" in meta,
                     f"{path.stem}: prompt and workflow stored in the file (keys {sorted(meta)})")


def check_metadata_disabled(server: Server, base: Path, report: Report) -> None:
    import av

    graph = shrink(json.loads((API_DIR / "wan2.1_t2v_1.3B.json").read_text()))
    run = server.run(graph, {"nodes": [], "links": []})
    if not report.check(run.ok, f"--disable-metadata run{'' if run.ok else ': ' + run.error()}"):
        return
    entry = run.files()[0]
    with av.open(str(base / "output" / entry["subfolder"] / entry["filename"])) as container:
        meta = dict(container.metadata)
    report.check("prompt" not in meta and "workflow" not in meta, f"--disable-metadata: nothing stored ({sorted(meta)})")


# -- hostile graphs ------------------------------------------------------------------------------------------------
T2V = "wan2.1_t2v_1.3B_teacache.json"
A14B = "wan2.2_t2v_A14B_magcache.json"
LORA = "wan2.2_t2v_A14B_4steps_lora.json"


def _set(class_type: str, **values):
    def change(graph: dict, base: Path) -> None:
        for node in graph.values():
            if node["class_type"] == class_type:
                node["inputs"].update(values)
    return change


def _fifo(kind: str, name: str, class_type: str, input_name: str):
    def change(graph: dict, base: Path) -> None:
        path = base / "models" / kind / name
        if not path.exists():
            os.mkfifo(path)
        _set(class_type, **{input_name: name})(graph, base)
    return change


HOSTILE = {  # name -> (workflow, change, words the refusal must contain)
    "nan cfg": (T2V, _set("WanExpertsSamplerBasic", cfg=math.nan), "cfg"),
    "inf shift": (T2V, _set("WanExpertsSamplerBasic", shift=math.inf), "shift"),
    "nan threshold": (T2V, _set("WanExpertsTeaCache", threshold=math.nan), "threshold"),
    "nan fps": (T2V, _set("WanExpertsSaveVideo", fps=math.nan), "fps"),
    "nan seed": (T2V, _set("WanExpertsSamplerBasic", seed=math.nan), "seed"),
    "huge seed": (T2V, _set("WanExpertsSamplerBasic", seed=2 ** 70), "seed"),
    "string steps": (T2V, _set("WanExpertsSamplerBasic", steps="many"), "steps"),
    "prefix ..": (T2V, _set("WanExpertsSaveVideo", filename_prefix="../escape"), "filename_prefix"),
    "prefix absolute": (T2V, _set("WanExpertsSaveVideo", filename_prefix="/tmp/escape"), "filename_prefix"),
    "prefix NUL": (T2V, _set("WanExpertsSaveVideo", filename_prefix="video/\0x"), "filename_prefix"),
    "prefix device": (T2V, _set("WanExpertsSaveVideo", filename_prefix="video/CON"), "filename_prefix"),
    "width over": (T2V, _set("WanExpertsEmptyLatent", width=8192, height=8192), "width"),
    "pixels over": (T2V, _set("WanExpertsEmptyLatent", width=4096, height=4096, frames=1025), "pixels"),
    "fifo tokenizer": (T2V, _fifo("text_encoders", "fifo.model", "WanExpertsLoadTextEncoder", "tokenizer"),
                       "tokenizer"),
    "device tokenizer": (T2V, _set("WanExpertsLoadTextEncoder", tokenizer="/dev/zero"), "tokenizer"),
    "fifo cache file": (T2V, _fifo("wan_step_cache", "fifo.json", "WanExpertsTeaCache", "coefficients_file"),
                        "coefficients_file"),
    "device cache file": (T2V, _set("WanExpertsTeaCache", coefficients_file="/dev/urandom"), "coefficients_file"),
    "device model": (T2V, _set("WanExpertsLoadDiT", model_name="/dev/zero"), "model_name"),
    "escaping model": (T2V, _set("WanExpertsLoadDiT", model_name="../../../etc/passwd"), "model_name"),
    "nan denoise": (A14B, _set("WanExpertsSampler", denoise=math.nan), "denoise"),
    "nan boundary": (A14B, _set("WanExpertsSampler", boundary=math.nan), "boundary"),
    "nan retention": (A14B, _set("WanExpertsMagCache", retention_ratio=math.nan), "retention_ratio"),
    "nan LoRA strength": (LORA, _set("WanExpertsLoRAPair", high_strength=math.nan), "high_strength"),
    "wrong dtype": (T2V, _set("WanExpertsLoadDiT", dtype="fp64"), "dtype"),
    "escaping LoRA": (LORA, _set("WanExpertsLoRAPair", high_noise_lora="../diffusion_models/x.safetensors"),
                      "high_noise_lora"),
    "prompt-extend model path": (T2V, lambda g, b: _add_extend(g, model="/etc"), "model"),
    "prompt-extend model ..": (T2V, lambda g, b: _add_extend(g, model="../models/LLM/TinyQwen"), "model"),
    "prompt-extend address": (T2V, lambda g, b: _add_extend(g, method="dashscope", base_url="http://127.0.0.1:9/"),
                              "base_url"),
}


def _add_extend(graph: dict, **inputs) -> None:
    """A Wan Prompt Extend node feeding Wan Text Encode's positive prompt."""
    encode = next(n for n in graph.values() if n["class_type"] == "WanExpertsTextEncode")
    graph["extend"] = {"class_type": "WanExpertsPromptExtend", "inputs": {
        "prompt": "a cat", "method": "local_qwen", "model": "", "target_lang": "en", "seed": 3, **inputs}}
    encode["inputs"]["positive"] = ["extend", 0]


def check_hostile(server: Server, base: Path, report: Report) -> None:
    for name, (workflow, change, words) in HOSTILE.items():
        graph = shrink(json.loads((API_DIR / workflow).read_text()))
        change(graph, base)
        before = output_files(base)
        run = server.run(graph, timeout=120)
        refused = run.http_status == 400 or (run.history is not None and not run.ok)
        message = run.error()
        left = output_files(base) - before
        quick = run.seconds < 10
        report.check(refused and words in message and not left and quick,
                     f"hostile '{name}': {'refused at validation' if run.http_status == 400 else 'stopped'} in "
                     f"{run.seconds:.1f} s, leaves {len(left)} file(s): {message[:300]}")


# -- core nodes, cancelling, memory ----------------------------------------------------------------------------------
def check_core_video(server: Server, base: Path, report: Report) -> None:
    """Wan Create Video into core Save Video: a playable file with the prompt stored."""
    import av

    graph = shrink(json.loads((API_DIR / "wan2.1_t2v_1.3B.json").read_text()))
    save_id = next(k for k, n in graph.items() if n["class_type"] == "WanExpertsSaveVideo")
    images = graph[save_id]["inputs"]["images"]
    graph[save_id] = {"class_type": "WanExpertsCreateVideo", "inputs": {"images": images, "fps": 16.0}}
    graph["core_save"] = {"class_type": "SaveVideo", "inputs": {"video": [save_id, 0], "filename_prefix": "core/Wan",
                                                                 "format": "mp4", "codec": "h264"}}
    run = server.run(graph, {"nodes": [], "links": []})
    if not report.check(run.ok, f"Wan Create Video -> core Save Video{'' if run.ok else ': ' + run.error()}"):
        return
    entry = run.files()[0]
    with av.open(str(base / "output" / entry["subfolder"] / entry["filename"])) as container:
        frames = sum(1 for _ in container.decode(video=0))
        meta = dict(container.metadata)
    report.check(frames == TINY["frames"] and "prompt" in meta, f"core Save Video file: {frames} frames, tags {sorted(meta)}")


def check_core_text_loader(server: Server, report: Report) -> None:
    """Core Load CLIP (type wan) with the pack's tiny UMT5 file: core builds UMT5-XXL at its fixed size, so the tiny
    file cannot load there; recorded; the bridge is checked in-process instead (``run_inprocess_checks``)."""
    graph = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                        "type": "wan", "device": "default"}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": "a cat"}},
             "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": ""}},
             "4": {"class_type": "WanExpertsConditioningFromCore", "inputs": {"positive": ["2", 0], "negative": ["3", 0]}},
             "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
    run = server.run(graph, timeout=300)
    report.notes.append(f"note  core Load CLIP with the tiny UMT5: {'ran' if run.ok else run.error()[:300]}")
    print(report.notes[-1], flush=True)


def check_interrupt(server: Server, base: Path, report: Report) -> None:
    """Cancel while sampling a longer run: the prompt ends interrupted soon after ``/interrupt``."""
    graph = shrink(json.loads((API_DIR / "wan2.1_t2v_1.3B.json").read_text()))
    for node in graph.values():
        if node["class_type"] == "WanExpertsSamplerBasic":
            node["inputs"]["steps"] = 200
        if node["class_type"] == "WanExpertsEmptyLatent":
            node["inputs"].update(width=256, height=256, frames=17)
    mark, before = len(server.log()), output_files(base)
    status, answer = server.queue(graph)
    prompt_id = answer["prompt_id"]
    started = _wait_for_sampling(server, mark)
    sent = time.time()
    server.post("/interrupt", {})
    entry = server.wait(prompt_id, timeout=120)
    stopped = time.time() - sent
    kinds = [m[0] for m in entry["status"].get("messages", [])]
    left = output_files(base) - before
    report.check(started and "execution_interrupted" in kinds and stopped < 10 and not left,
                 f"interrupt during sampling: stopped {stopped:.1f} s after /interrupt ({kinds}), {len(left)} new files")


def _wait_for_sampling(server: Server, mark: int, timeout: float = 120) -> bool:
    """True once the log (after ``mark``) shows sampling started, and a few steps later."""
    end = time.time() + timeout
    while time.time() < end:
        if "Wan Sampler" in server.log()[mark:]:
            time.sleep(3)
            return True
        time.sleep(0.2)
    return False


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def check_repeated_runs(server: Server, report: Report, runs: int = 5) -> None:
    """The LoRA graph at 128x128, 9 frames, with a new seed and LoRA strength each time (a new patched model per
    run): the server's RSS stays roughly flat."""
    graph = shrink(json.loads((API_DIR / LORA).read_text()))
    node_of(graph, "WanExpertsEmptyLatent")[1].update(width=128, height=128, frames=9)
    sizes = []
    for i in range(runs):
        node_of(graph, "WanExpertsSampler")[1]["seed"] = 1000 + i
        node_of(graph, "WanExpertsLoRAPair")[1]["high_strength"] = 0.5 + 0.1 * i
        run = server.run(graph)
        if not report.check(run.ok, f"repeated run {i + 1}{'' if run.ok else ': ' + run.error()}"):
            return
        sizes.append(rss_of(server.proc.pid))
    growth = (sizes[-1] - sizes[1]) / 2 ** 20
    report.check(growth < 150, f"RSS over {runs} runs (MiB): {[round(s / 2 ** 20) for s in sizes]}, growth after the "
                               f"second {growth:.0f} MiB")


def check_cache_purity(server: Server, base: Path, report: Report) -> None:
    """ComfyUI keeps node outputs between prompts and hands the same objects to the next prompt: seed 1, then other
    runs on the same cached models, text, latents and images (another seed, another LoRA strength, other expert
    settings), then seed 1 again must give the same result as the first time.

    Compared losslessly, through core nodes added to the graph: the sampled latents (core Save Latent) exactly, and
    the decoded images (core Save Image, PNG) to within one level of 255. The mp4 is not compared: the CPU kernels
    of PyTorch (oneDNN / MKL) may round the last bit differently with another memory alignment, and x264 turns
    such a one-level difference of a tiny random frame into other coding decisions."""
    for workflow in (LORA, "wan2.2_i2v_A14B.json", "wan2.2_i2v_A14B_extend_3_segments.json", T2V,
                     "wan2.2_ti2v_5B_i2v.json", "wan2.2_ti2v_5B_t2v.json"):
        graph = shrink(json.loads((API_DIR / workflow).read_text()))
        _add_lossless_outputs(graph, workflow)
        seeded = [n["inputs"] for n in graph.values() if "seed" in n["inputs"]]
        results = []
        for seed in (1, 2, 1):
            for inputs in seeded:
                inputs["seed"] = seed
            if seed == 2:
                _vary(graph)
            run = server.run(graph)
            if not report.check(run.ok, f"cache purity {workflow} seed {seed}{'' if run.ok else ': ' + run.error()}"):
                break
            results.append(_lossless_outputs(base, run))
            if seed == 2:
                _vary(graph, undo=True)
        if len(results) == 3:
            (lat1, img1), (lat2, _), (lat3, img3) = results
            same = lat1.shape == lat3.shape and bool((lat1 == lat3).all()) and img1.shape == img3.shape
            level = int(abs(img1.astype(int) - img3.astype(int)).max()) if same else -1
            report.check(same and level <= 1 and not (lat1.shape == lat2.shape and bool((lat1 == lat2).all())),
                         f"cache purity {workflow}: seed 1 again after other runs gives the same latents and "
                         f"images (largest image difference {level} of 255)")


def _add_lossless_outputs(graph: dict, workflow: str) -> None:
    """Core Save Latent after the (last) sampler and core Save Image after the (last) VAE decode."""
    tag = Path(workflow).stem
    sampler = [k for k, n in graph.items() if n["class_type"] in ("WanExpertsSampler", "WanExpertsSamplerBasic")]
    decode = [k for k, n in graph.items() if n["class_type"] == "WanExpertsVAEDecode"]
    graph["purity_latent"] = {"class_type": "SaveLatent",
                              "inputs": {"samples": [sampler[-1], 0], "filename_prefix": f"purity/{tag}"}}
    graph["purity_image"] = {"class_type": "SaveImage",
                             "inputs": {"images": [decode[-1], 0], "filename_prefix": f"purity/{tag}"}}


def _lossless_outputs(base: Path, run: "Run"):
    """(the saved latents, the saved images stacked) of one run's purity outputs, as its history lists them."""
    import numpy as np
    from PIL import Image
    from safetensors.numpy import load_file

    outputs = run.history["outputs"]

    def path(entry: dict) -> Path:
        return base / "output" / entry["subfolder"] / entry["filename"]

    latent = load_file(str(path(outputs["purity_latent"]["latents"][0])))["latent_tensor"]
    images = np.stack([np.asarray(Image.open(path(e))) for e in outputs["purity_image"]["images"]])
    return latent, images


def _vary(graph: dict, undo: bool = False) -> None:
    """Change what shares cached inputs with the seed-1 run: LoRA strength, guidance, step cache threshold."""
    for node in graph.values():
        inputs = node["inputs"]
        for key, delta in (("high_strength", 0.3), ("cfg_high", 0.5), ("cfg", 0.5), ("threshold", 0.02)):
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = round(inputs[key] + (-delta if undo else delta), 6)


def check_free(server: Server, report: Report) -> None:
    """ComfyUI's "Unload models" / free memory (``POST /free``), then another run: no errors from ComfyUI calling into
    the pack's registered models."""
    mark = len(server.log())
    status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
    graph = shrink(json.loads((API_DIR / "wan2.1_t2v_1.3B.json").read_text()))
    run = server.run(graph)
    tail = server.log()[mark:]
    report.check(status == 200 and run.ok and "Traceback" not in tail and "Exception" not in tail,
                 f"/free with unload_models, then a run{'' if run.ok else ': ' + run.error()}")


# -- features beyond the shipped workflows -------------------------------------------------------------------------
def node_of(graph: dict, class_type: str) -> tuple[str, dict]:
    """(id, inputs) of the one node of ``class_type``."""
    (found,) = [(k, n["inputs"]) for k, n in graph.items() if n["class_type"] == class_type]
    return found


def write_feature_files(base: Path) -> None:
    """A GGUF copy of the tiny T2V DiT and of the tiny UMT5 (llama.cpp names, no tokenizer metadata), a tokenizer
    file, a MagCache curve file and a tiny local Qwen."""
    from safetensors.torch import load_file

    from tiny_qwen import write_tiny_qwen
    from wan.runner.demo import train_tokenizer
    from wan.quant.gguf_write import write_gguf

    models = base / "models"
    dit = load_file(str(models / "diffusion_models" / "wan2.1_t2v_1.3B_fp16.safetensors"))
    (models / "unet").mkdir(exist_ok=True)
    write_gguf(models / "unet" / "wan2.1_t2v_1.3B-Q8_0.gguf", dit)
    write_gguf_text_encoder(models / "text_encoders")
    (models / "text_encoders" / "google").mkdir(exist_ok=True)
    (models / "text_encoders" / "google" / "spiece.model").write_bytes(train_tokenizer())
    curve = {"curves": {"wan22_t2v_a14b": {"steps": 3, "ratios": [1.0, 1.0, 0.95, 0.95]}}}
    (models / "wan_step_cache" / "mine.json").write_text(json.dumps(curve))
    if not (models / "LLM" / "TinyQwen" / "config.json").exists():
        write_tiny_qwen(models / "LLM" / "TinyQwen")


def write_gguf_text_encoder(folder: Path) -> None:
    """The tiny UMT5 file (transformers names) as a ``t5encoder`` GGUF, named by gguf's own llama.cpp name table."""
    from safetensors.torch import load_file

    from gguf_t5_names import llama_t5_names
    from wan.quant.gguf_write import write_gguf

    sd = load_file(str(folder / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"))
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    names = llama_t5_names([k for k in sd if k.endswith(".weight")], layers)
    write_gguf(folder / "umt5-xxl-encoder-Q8_0.gguf", {name: sd[k] for k, name in names.items()}, arch="t5encoder")


def _gguf_text_encoder(graph: dict) -> None:
    node_of(graph, "WanExpertsLoadTextEncoder")[1].update(text_encoder_name="umt5-xxl-encoder-Q8_0.gguf",
                                                          tokenizer="google/spiece.model")


def _gguf(graph: dict) -> None:
    node_of(graph, "WanExpertsLoadDiT")[1]["model_name"] = "wan2.1_t2v_1.3B-Q8_0.gguf"


def _lora_streaming(blocks: int):
    def change(graph: dict) -> None:
        dit_id, dit = node_of(graph, "WanExpertsLoadDiT")
        dit["offload_blocks"] = blocks
        sampler = node_of(graph, "WanExpertsSamplerBasic")[1]
        graph["lora"] = {"class_type": "WanExpertsLoRA", "inputs": {
            "model": [dit_id, 0], "lora_name": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
            "strength": 0.7, "expert": "both"}}
        sampler["model"] = ["lora", 0]
    return change


def _tokenizer_file(graph: dict) -> None:
    node_of(graph, "WanExpertsLoadTextEncoder")[1].update(tokenizer="google/spiece.model", keep_loaded=True)


def _curve_file(graph: dict) -> None:
    node_of(graph, "WanExpertsMagCache")[1].update(curve_file="mine.json", allow_fallback=False)


def _prompt_extend(graph: dict) -> None:
    encode = node_of(graph, "WanExpertsTextEncode")[1]
    graph["extend"] = {"class_type": "WanExpertsPromptExtend", "inputs": {
        "prompt": "a cat", "method": "local_qwen", "model": "TinyQwen", "target_lang": "en", "seed": 3,
        "decoding": "greedy", "device": "cpu"}}
    encode["positive"] = ["extend", 0]


FEATURES = {  # name -> (workflow, change)
    "GGUF DiT from models/unet": (T2V, _gguf),
    "GGUF UMT5 text encoder from models/text_encoders (tokenizer file picked)": (T2V, _gguf_text_encoder),
    "Wan LoRA on a DiT streaming 1 block": (T2V, _lora_streaming(1)),
    "Wan LoRA on a DiT, automatic streaming": (T2V, _lora_streaming(-1)),
    "tokenizer file picked from text_encoders, keep_loaded": (T2V, _tokenizer_file),
    "MagCache curve file from wan_step_cache": (A14B, _curve_file),
    "Wan Prompt Extend with a local Qwen": (T2V, _prompt_extend),
}


def check_features(server: Server, base: Path, report: Report) -> None:
    write_feature_files(base)
    info = server.get("/object_info")
    lists = {"gguf": info["WanExpertsLoadDiT"]["input"]["required"]["model_name"][0],
             "tokenizer": info["WanExpertsLoadTextEncoder"]["input"]["optional"]["tokenizer"][0],
             "curve": info["WanExpertsMagCache"]["input"]["optional"]["curve_file"][0]}
    report.check("wan2.1_t2v_1.3B-Q8_0.gguf" in lists["gguf"] and "google/spiece.model" in lists["tokenizer"]
                 and "mine.json" in lists["curve"], f"new files appear in the lists: {lists}")
    for name, (workflow, change) in FEATURES.items():
        graph = shrink(json.loads((API_DIR / workflow).read_text()))
        change(graph)
        mark = len(server.log())
        run = server.run(graph)
        report.check(run.ok and len(run.files()) == 1, f"{name}{'' if run.ok else ': ' + run.error()}")
        if "Prompt Extend" in name:
            lines = [line for line in server.log()[mark:].splitlines() if "rompt" in line]
            print("      " + "\n      ".join(lines[:6]))


def check_previews(server: Server, report: Report) -> None:
    """Live previews reach a websocket client while Wan Sampler runs (16- and 48-channel latents)."""
    import asyncio

    for workflow in ("wan2.1_t2v_1.3B.json", "wan2.2_ti2v_5B_t2v.json"):
        graph = shrink(json.loads((API_DIR / workflow).read_text()))
        node_of(graph, "WanExpertsSamplerBasic")[1]["seed"] += 1  # not cached
        previews, progress, status = asyncio.run(_watch(server, graph))
        report.check(status == "success" and previews >= 1 and progress,
                     f"live previews for {workflow}: {previews} preview images, progress {progress}, {status}")


async def _watch(server: Server, graph: dict, timeout: float = 300):
    import aiohttp

    previews, progress = 0, []
    client_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server.url}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
                prompt_id = (await r.json())["prompt_id"]
            end = time.time() + timeout
            while time.time() < end:
                msg = await ws.receive(timeout=timeout)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    previews += int.from_bytes(msg.data[:4], "big") in (1, 4)  # PREVIEW_IMAGE(_WITH_METADATA)
                    continue
                data = json.loads(msg.data)
                if data["type"] == "progress":
                    progress.append((data["data"]["value"], data["data"]["max"]))
                if data["type"] in ("execution_success", "execution_error") and data["data"]["prompt_id"] == prompt_id:
                    return previews, progress[-3:], data["type"].split("_")[1]
    return previews, progress[-3:], "timeout"


# -- main ----------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfy", type=Path, required=True, help="ComfyUI folder (with main.py)")
    parser.add_argument("--python", default=sys.executable, help="Python that runs ComfyUI (default: this one)")
    parser.add_argument("--base", type=Path, help="base folder to use (default: a new temporary folder)")
    parser.add_argument("--only", help="run only the API workflows whose name contains this")
    parser.add_argument("--skip", nargs="*", default=(), choices=("workflows", "hostile", "features", "core", "cache", "interrupt",
                                                                   "repeat", "free", "metadata", "inprocess"))
    parser.add_argument("--keep", action="store_true", help="keep the base folder and the server logs")
    args = parser.parse_args(argv)

    base = args.base or Path(tempfile.mkdtemp(prefix="wan_comfy_check_"))
    print(f"base folder: {base}", flush=True)
    prepare_base(base)
    report = Report()
    run_server_checks(args, base, report)
    if "metadata" not in args.skip:
        run_metadata_server(args, base, report)
    if "inprocess" not in args.skip:
        run_inprocess_checks(args, base, report)
    print(f"\n{len(report.notes)} ok, {len(report.problems)} failed")
    for problem in report.problems:
        print(problem)
    if not args.keep and not args.base:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if report.problems else 0


def run_server_checks(args, base: Path, report: Report) -> None:
    server = Server(args.python, args.comfy.resolve(), base)
    try:
        server.wait_ready()
        check_import(server, report)
        info = check_object_info(server, report, pack_classes())
        check_file_lists(info, report)
        check_ui_workflows(info, report)
        if "workflows" not in args.skip:
            check_api_workflows(server, base, report, args.only)
        if "hostile" not in args.skip:
            check_hostile(server, base, report)
        if "features" not in args.skip:
            check_features(server, base, report)
            check_previews(server, report)
        if "core" not in args.skip:
            check_core_video(server, base, report)
            check_core_text_loader(server, report)
        if "cache" not in args.skip:
            check_cache_purity(server, base, report)
        if "interrupt" not in args.skip:
            check_interrupt(server, base, report)
        if "free" not in args.skip:
            check_free(server, report)
        if "repeat" not in args.skip:
            check_repeated_runs(server, report)
        errors = [line for line in server.log().splitlines() if "Traceback" in line or "!!! Exception" in line]
        report.notes.append(f"note  {len(errors)} tracebacks / exceptions in the server log (hostile graphs cause some)")
        print(report.notes[-1])
    finally:
        server.stop()


def run_inprocess_checks(args, base: Path, report: Report) -> None:
    """scripts/comfy_inprocess_check.py on this base folder's tiny models: the memory hand-off and the core bridges
    against ComfyUI's own modules, in a process of their own."""
    script = ROOT / "scripts" / "comfy_inprocess_check.py"
    done = subprocess.run([args.python, str(script), "--comfy", str(args.comfy.resolve()), "--models",
                           str(base / "models")], capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    for line in lines:
        print(line, flush=True)
    report.check(done.returncode == 0 and bool(lines) and not any(line.startswith("FAIL") for line in lines),
                 f"in-process checks: {len(lines)} results, exit status {done.returncode}"
                 + ("" if done.returncode == 0 else ": " + done.stderr[-500:]))


def run_metadata_server(args, base: Path, report: Report) -> None:
    server = Server(args.python, args.comfy.resolve(), base, ("--disable-metadata",), name="comfy_no_metadata")
    try:
        server.wait_ready()
        check_metadata_disabled(server, base, report)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
