"""The Dashscope prompt-extension service through the official ``dashscope`` SDK (optional: ``pip install dashscope``).

As the official ``DashScopePromptExpander``: ``Generation.call`` for text, ``MultiModalConversation.call`` with the
images as uploaded ``file://`` PNGs, ``result_format="message"``, the seed passed along, up to 4 attempts. The key
comes from the call or ``DASH_API_KEY``; the endpoint from the call, ``DASH_API_URL`` or the Beijing default
(international accounts: ``INTERNATIONAL_URL``).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus

from ..errors import InputError
from .images import write_dashscope_images
from .messages import dashscope_vision_messages, text_messages

DEFAULT_URL = "https://dashscope.aliyuncs.com/api/v1"
INTERNATIONAL_URL = "https://dashscope-intl.aliyuncs.com/api/v1"
KEY_ENV, URL_ENV = "DASH_API_KEY", "DASH_API_URL"
# A rewrite answers in seconds; a dead service must not hold a graph for 4 x the SDK's 300 s: 4 x 30 s at most.
REQUEST_TIMEOUT = 30.0


class ServiceError(RuntimeError):
    """The service could not be used or did not answer with a prompt; the message says why."""


@dataclass(frozen=True)
class DashscopeOptions:
    api_key: str | None = None  # None or "": $DASH_API_KEY
    base_url: str | None = None  # None or "": $DASH_API_URL, else DEFAULT_URL
    retries: int = 4  # attempts, as the official expander
    timeout: float | None = REQUEST_TIMEOUT  # seconds per request; None: the SDK's default (300 s)

    def key(self) -> str:
        key = self.api_key or os.environ.get(KEY_ENV)
        if not key:
            raise ServiceError(f"no Dashscope API key: set the {KEY_ENV} environment variable (or pass an api key)")
        return key

    def url(self) -> str:
        return self.base_url or os.environ.get(URL_ENV) or DEFAULT_URL


def load_sdk():
    try:
        import dashscope
    except ImportError as exc:
        raise InputError("The 'dashscope' prompt-extension method needs the Dashscope SDK, which is not installed. "
                         "Run: pip install dashscope (in the Python that runs ComfyUI or wan.generate), or use "
                         "the 'local_qwen' method.") from exc
    return dashscope


def ask_dashscope(model: str, system: str, prompt: str, images: list, seed: int, options: DashscopeOptions) -> str:
    """The service's rewrite of ``prompt``; ServiceError (with the last failure) when every attempt failed."""
    sdk = load_sdk()
    key = options.key()
    with _endpoint(sdk, options.url()), tempfile.TemporaryDirectory(prefix="wan_prompt_") as folder:
        if images:
            urls = [f"file://{path}" for path in write_dashscope_images(images, folder)]
            call, messages = sdk.MultiModalConversation.call, dashscope_vision_messages(system, prompt, urls)
        else:
            call, messages = sdk.Generation.call, text_messages(system, prompt)
        kwargs = {"request_timeout": options.timeout} if options.timeout is not None else {}
        failure = None
        for _ in range(max(1, options.retries)):
            try:
                response = call(model, messages=messages, seed=seed, result_format="message", api_key=key, **kwargs)
                return _answer(response, vision=bool(images))
            except Exception as exc:  # the official expander retries on any failure
                failure = exc
    raise ServiceError(f"{failure}")


def _answer(response, vision: bool) -> str:
    if response.status_code != HTTPStatus.OK:
        raise ServiceError(f"HTTP {response.status_code} {response.code}: {response.message}")
    content = response["output"]["choices"][0]["message"]["content"]
    # official: the multimodal answer is the first content item's text, with newlines written as "\n"
    return content[0]["text"].replace("\n", "\\n") if vision else content


@contextmanager
def _endpoint(sdk, url: str):
    """The SDK reads its endpoint from a module global (also for uploads); set it for this call only."""
    previous = sdk.base_http_api_url
    sdk.base_http_api_url = url
    try:
        yield
    finally:
        sdk.base_http_api_url = previous
