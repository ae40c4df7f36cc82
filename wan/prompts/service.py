"""The Dashscope prompt-extension service through the official ``dashscope`` SDK (optional: ``pip install dashscope``).

As the official ``DashScopePromptExpander``: ``Generation.call`` for text, ``MultiModalConversation.call`` with the
images as uploaded ``file://`` PNGs, ``result_format="message"``, the seed passed along, up to 4 attempts. The key
comes from the call or ``DASH_API_KEY``; the endpoint from the call, ``DASH_API_URL`` or the Beijing default
(international accounts: ``INTERNATIONAL_URL``).

A service address that comes from outside the server (a graph) must be one of ``OFFICIAL_HOSTS``, spelled so that
every URL parser reads the same host (``address_problem``): the API key is sent there. Errors and logs never hold
the key (``redact``).
"""
from __future__ import annotations

import os
import re
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
# The service's own gateways (Beijing, international, Hong Kong), as the SDK names them; exact names, no suffix match
OFFICIAL_HOSTS = ("dashscope.aliyuncs.com", "dashscope-intl.aliyuncs.com", "cn-hongkong.dashscope.aliyuncs.com")
# https, an official host, an optional :443 and a plain path: no user part, backslash, percent sign, space, query or
# fragment, so the HTTP client (urllib3), urllib and a browser all read the same host
_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an Authorization header carries as it is
_OFFICIAL_URL = re.compile(r"https://(?P<host>[a-z.-]+)(?::443)?(?P<path>/[A-Za-z0-9._~/-]*)?")
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
    any_address: bool = True  # False: base_url must be an official address (for addresses from a graph)

    def key(self) -> str:
        key = self.api_key or os.environ.get(KEY_ENV)
        if not key:
            raise ServiceError(f"no Dashscope API key: set the {KEY_ENV} environment variable (or pass an api key)")
        if not _KEY.fullmatch(key):  # the HTTP client would refuse it and quote it in its error (and the SDK's log)
            raise InputError("The Dashscope API key holds a character an HTTP header cannot carry (a space, a line "
                             "break or a non-ASCII letter); copy the key again (it is not shown here).")
        return key

    def url(self) -> str:
        if self.base_url and not self.any_address and address_problem(self.base_url):
            raise InputError(f"Dashscope: {address_problem(self.base_url)}")
        return self.base_url or os.environ.get(URL_ENV) or DEFAULT_URL


def address_problem(url) -> str | None:
    """None when ``url`` is an official Dashscope address (as ``https://dashscope-intl.aliyuncs.com/api/v1``), else
    why not. The host is checked as the SDK's HTTP client parses it (urllib3), and as ``urllib`` does."""
    text = url if isinstance(url, str) else ""
    match = _OFFICIAL_URL.fullmatch(text)
    if match and match["host"] in OFFICIAL_HOSTS and _client_host(text) == match["host"]:
        return None
    return (f"base_url '{_shown(url)}' is not a Dashscope address (https://{OFFICIAL_HOSTS[0]}/api/v1 or "
            f"{INTERNATIONAL_URL}); the API key is sent there. Set {URL_ENV} on the server for other addresses")


def _client_host(url: str) -> str | None:
    from urllib.parse import urlsplit

    from urllib3.util import parse_url

    try:
        hosts = {parse_url(url).host, urlsplit(url).hostname}
    except ValueError:
        return None
    return hosts.pop() if len(hosts) == 1 else None


def _shown(value) -> str:
    """A value for a message: printable characters only, at most 80."""
    text = str(value)[:80]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def redact(text: str, key: str | None) -> str:
    """``text`` without the API key (an error from the HTTP client may quote the header that holds it)."""
    for form in (key, repr(key)[1:-1]) if key else ():
        text = text.replace(form, "<api key>")
    return text


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
    options.url()  # an address the caller may not use fails before the key is read
    key = options.key()
    try:
        return _ask(sdk, key, model, system, prompt, images, seed, options)
    except Exception as exc:  # raised anew without the chain: the client's own error may quote the key
        raise ServiceError(redact(f"{exc}", key)) from None


def _ask(sdk, key: str, model: str, system: str, prompt: str, images: list, seed: int,
         options: DashscopeOptions) -> str:
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
    raise ServiceError(f"{failure}") from None


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
