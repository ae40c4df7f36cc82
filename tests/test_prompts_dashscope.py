"""Dashscope prompt extension through the real ``dashscope`` SDK against a local HTTP server on 127.0.0.1 that speaks
the endpoints the SDK calls (text and multimodal generation, the upload policy and the file upload).

Oracle: the official ``DashScopePromptExpander`` (``wan22``: ``wan/utils/prompt_extend.py``) sends its request to
the same server; both requests must carry the same model, messages, seed and result format, and the same uploaded
image pixels. Failures (error replies, a timeout, no key) must keep the original prompt with a clear log line."""
import io
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from oracles import official
from wan.errors import InputError
from wan.prompts import DashscopeOptions, extend_prompt
from wan.prompts.images import dashscope_size

KEY = "sk-test-key"
ANSWER = "A white cat on a surfboard.\nSunny beach, close-up."


class FakeDashscope(BaseHTTPRequestHandler):
    """One class per server (see ``server``): ``requests`` records every call, ``mode`` picks the reply."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        self._record("GET", None)
        if url.path == "/api/v1/uploads" and parse_qs(url.query).get("action") == ["getPolicy"]:
            host = f"http://127.0.0.1:{self.server.server_address[1]}/oss"
            return self._json(200, {"request_id": "policy-1", "data": {
                "policy": "p", "signature": "s", "upload_dir": "dashscope-instant/test", "upload_host": host,
                "expire_in_seconds": 300, "max_file_size_mb": 100, "capacity_limit_mb": 1000,
                "oss_access_key_id": "id", "x_oss_object_acl": "private", "x_oss_forbid_overwrite": "true"}})
        self._json(404, {"code": "NotFound", "message": self.path})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/oss":
            self.server.uploads.append(_multipart_file(body, self.headers["Content-Type"]))
            self._record("POST", None)
            return self._json(200, {})
        request = json.loads(body)
        self._record("POST", request)
        mode = self.server.mode
        if mode == "slow":
            time.sleep(2.0)
        if mode == "error":
            return self._json(400, {"request_id": "e", "code": "InvalidParameter", "message": "seed out of range"})
        content = ([{"text": ANSWER}] if self.path.endswith("multimodal-generation/generation") else ANSWER)
        self._json(200, {"request_id": "r", "output": {"choices": [{"finish_reason": "stop", "message": {
            "role": "assistant", "content": content}}]}, "usage": {"input_tokens": 1, "output_tokens": 1}})

    def _record(self, method, body):
        self.server.requests.append({"method": method, "path": self.path, "body": body,
                                     "auth": self.headers.get("Authorization")})

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


def _multipart_file(body: bytes, content_type: str) -> bytes:
    boundary = content_type.split("boundary=")[1].encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return data[:-2]  # drop the CRLF before the next boundary
    raise AssertionError("no file in the upload")


@pytest.fixture
def server(monkeypatch):
    import dashscope

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeDashscope)
    httpd.requests, httpd.uploads, httpd.mode = [], [], "ok"
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/api/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("DASH_API_KEY", KEY)
    monkeypatch.setenv("DASH_API_URL", httpd.url)
    for name in ("api_key", "base_http_api_url"):  # the official expander sets these SDK globals
        monkeypatch.setattr(dashscope, name, getattr(dashscope, name))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def image(width=900, height=600):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def official_expander(task, vision):
    pe = official.load("utils.prompt_extend")
    return pe.DashScopePromptExpander(model_name=None, task=task, is_vl=vision)


def generation_requests(httpd):
    return [r for r in httpd.requests if r["body"] is not None]


def normalised(request: dict) -> dict:
    """The request with uploaded file names (random temp names) replaced by their position."""
    body = json.loads(json.dumps(request["body"]))
    for message in body["input"]["messages"]:
        for item in message["content"] if isinstance(message["content"], list) else []:
            if "image" in item:
                assert item["image"].startswith("oss://dashscope-instant/test/") and item["image"].endswith(".png")
                item["image"] = "<uploaded png>"
    return {"path": request["path"], "auth": request["auth"], "body": body}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_text_request_and_answer_equal_the_official_expander(server, lang):
    ref = official_expander("t2v-A14B", vision=False)("a cat", tar_lang=lang, seed=42)
    got = extend_prompt("a cat", "dashscope", None, lang, seed=42)
    official_request, our_request = generation_requests(server)
    assert normalised(our_request) == normalised(official_request)
    assert our_request["path"] == "/api/v1/services/aigc/text-generation/generation"
    assert our_request["body"]["model"] == "qwen-plus" and our_request["auth"] == f"Bearer {KEY}"
    assert our_request["body"]["parameters"]["seed"] == 42
    assert our_request["body"]["parameters"]["result_format"] == "message"
    assert our_request["body"]["input"]["messages"] == [{"role": "system", "content": got.system_prompt},
                                                        {"role": "user", "content": "a cat"}]
    assert got.extended and got.prompt == ref.prompt == ANSWER and got.model == "qwen-plus"


@pytest.mark.parametrize("prompt", ["a cat", ""])
def test_image_request_upload_and_answer_equal_the_official_expander(server, prompt):
    start = image()
    ref = official_expander("i2v-A14B", vision=True)(prompt, tar_lang="en", image=start, seed=5)
    got = extend_prompt(prompt, "dashscope", None, "en", image=start, seed=5)
    official_request, our_request = generation_requests(server)
    assert normalised(our_request) == normalised(official_request)
    assert our_request["path"] == "/api/v1/services/aigc/multimodal-generation/generation"
    assert our_request["body"]["model"] == "qwen-vl-max" and our_request["body"]["parameters"]["seed"] == 5
    assert normalised(our_request)["body"]["input"]["messages"] == [
        {"role": "system", "content": [{"text": got.system_prompt}]},
        {"role": "user", "content": [{"text": prompt}, {"image": "<uploaded png>"}]}]
    official_png, our_png = (np.asarray(Image.open(io.BytesIO(b))) for b in server.uploads)
    assert our_png.shape == official_png.shape == (*dashscope_size(900, 600)[::-1], 3)
    assert np.array_equal(our_png, official_png)
    assert got.prompt == ref.prompt == ANSWER.replace("\n", "\\n")  # official: newlines written out


def test_custom_model_endpoint_and_key_are_used(server, monkeypatch):
    monkeypatch.delenv("DASH_API_KEY")
    monkeypatch.setenv("DASH_API_URL", "http://127.0.0.1:9/unused")
    got = extend_prompt("a cat", "dashscope", "qwen-max", "en", seed=1,
                        dashscope=DashscopeOptions(api_key="sk-other", base_url=server.url))
    (request,) = generation_requests(server)
    assert got.extended and request["body"]["model"] == "qwen-max" and request["auth"] == "Bearer sk-other"


def test_error_reply_falls_back_after_the_official_retries(server, caplog):
    server.mode = "error"
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        got = extend_prompt("a cat", "dashscope", None, "en", seed=1)
    assert not got.extended and got.prompt == "a cat" and "400" in got.message and "InvalidParameter" in got.message
    assert len(generation_requests(server)) == 4  # the official retry count
    (record,) = [r for r in caplog.records if "Extending prompt failed" in r.getMessage()]
    assert "seed out of range" in record.getMessage() and "Falling back to the original prompt" in record.getMessage()


def test_timeout_falls_back(server, caplog):
    server.mode = "slow"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        got = extend_prompt("a cat", "dashscope", None, "en", seed=1,
                            dashscope=DashscopeOptions(timeout=0.3, retries=2))
    assert time.monotonic() - started < 1.9 and len(generation_requests(server)) == 2
    assert not got.extended and got.prompt == "a cat"
    assert any("Extending prompt failed" in r.getMessage() and "imeout" in r.getMessage() for r in caplog.records)


def test_missing_key_falls_back_without_a_request(server, monkeypatch, caplog):
    monkeypatch.delenv("DASH_API_KEY")
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        got = extend_prompt("a cat", "dashscope", None, "en", image=image(64, 64), seed=1)
    assert not got.extended and got.prompt == "a cat" and server.requests == []
    assert any("DASH_API_KEY" in r.getMessage() and "Falling back" in r.getMessage() for r in caplog.records)


def test_missing_sdk_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dashscope", None)  # import dashscope -> ImportError
    with pytest.raises(InputError, match="pip install dashscope"):
        extend_prompt("a cat", "dashscope", None, "en")
