"""The Dashscope API key typed into a graph goes to the service only, and nowhere else: not to an address that only
looks like the service's to a lax check, not into a saved video's metadata, not into a log or an error.

Runs the real ``dashscope`` SDK (its HTTP client, ``requests`` / urllib3, parses the address) against a listener on
127.0.0.1 that stands in for the service; every socket connection the process makes is recorded, and any to
another address is refused and counted as a leak."""
import json
import logging
import os
import socket

import av
import pytest
import torch

from test_prompts_dashscope import FakeDashscope, generation_requests, server  # noqa: F401 (fixture)

TYPED_KEY = "sk-typed-in-the-graph-0123456789"


@pytest.fixture
def connections(monkeypatch, server):  # noqa: F811
    """Every address a socket of this process connects to; only the listener is let through."""
    seen, connect = [], socket.socket.connect
    allowed = ("127.0.0.1", server.server_address[1])

    def recorded(sock, address):
        seen.append(tuple(address[:2]) if isinstance(address, tuple) else address)
        if tuple(address[:2]) != allowed:
            raise ConnectionRefusedError(f"test: no connection to {address} allowed")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recorded)
    return seen


@pytest.fixture
def prompt_node(pack, models_dir):
    return pack.nodes.prompts.WanExpertsPromptExtend()


@pytest.mark.parametrize("address", [
    "https://127.0.0.1\\.aliyuncs.com/api/v1",  # urllib3 reads host 127.0.0.1 (the backslash ends the authority)
    "https://127.0.0.1\\@dashscope.aliyuncs.com/api/v1",
    "https://dashscope.aliyuncs.com\\@127.0.0.1/api/v1",
    "https://attacker-bucket.oss-cn-beijing.aliyuncs.com/api/v1",  # a host under the domain that anyone can rent
    "https://dashscope.aliyuncs.com:8443/api/v1",
    "https://dashscope.aliyuncs.com%2F@127.0.0.1/api/v1",
    "https://dashscope.aliyuncs.com\t/api/v1",
    "https://dashscope.aliyuncs.com./api/v1",
])
def test_graph_address_the_client_reads_as_another_host_is_refused(pack, prompt_node, connections, server,  # noqa: F811
                                                                    address):
    node = type(prompt_node)
    verdict = node.VALIDATE_INPUTS(model=None, base_url=address)
    assert isinstance(verdict, str) and "base_url" in verdict and "is not a Dashscope address" in verdict
    with pytest.raises(pack.wan.errors.InputError, match="is not a Dashscope address"):
        prompt_node.extend("a cat", "dashscope", "", "en", 0, api_key=TYPED_KEY, base_url=address)
    assert connections == [] and server.requests == []


@pytest.mark.parametrize("address", ["https://dashscope.aliyuncs.com/api/v1", "https://dashscope-intl.aliyuncs.com",
                                     "https://dashscope-intl.aliyuncs.com:443/api/v1/"])
def test_official_addresses_are_accepted(prompt_node, address):
    assert type(prompt_node).VALIDATE_INPUTS(model=None, base_url=address) is True


def test_typed_key_reaches_the_service_only_and_no_saved_file(pack, prompt_node, connections, server):  # noqa: F811
    """The server's DASH_API_URL (the listener) gets the typed key; the saved video's prompt and workflow do not."""
    out = prompt_node.extend("a cat", "dashscope", "", "en", 7, api_key=f" {TYPED_KEY} ", base_url="")
    (request,) = generation_requests(server)
    assert request["auth"] == f"Bearer {TYPED_KEY}" and out["result"][0].startswith("A white cat")
    assert connections and set(connections) == {("127.0.0.1", server.server_address[1])}

    prompt = {"1": {"class_type": "WanExpertsPromptExtend", "inputs": {"prompt": "a cat", "api_key": TYPED_KEY}},
              "2": {"class_type": "PrimitiveString", "inputs": {"value": "sk-linked-key-abcdef"}},
              "3": {"class_type": "WanExpertsPromptExtend", "inputs": {"prompt": "a dog", "api_key": ["2", 0]}},
              "4": {"class_type": "WanExpertsSaveVideo", "inputs": {"fps": 16.0}}}
    workflow = {"nodes": [
        {"id": 1, "type": "WanExpertsPromptExtend", "widgets_values": ["a cat", "dashscope", "", "en", 7, "fixed",
                                                                        "wan2.2", "sample", "gpu", TYPED_KEY, ""]},
        {"id": 2, "type": "PrimitiveString", "widgets_values": ["sk-linked-key-abcdef"]},
        {"id": 5, "type": "WanExpertsPromptExtend", "widgets_values": {"api_key": "sk-by-name-key-987"}}]}
    save = pack.nodes.video.WanExpertsSaveVideo()
    saved = save.save(torch.rand(2, 16, 16, 3), 16.0, "video/Wan", prompt=prompt, extra_pnginfo={"workflow": workflow})
    entry = saved["ui"]["images"][0]
    path = os.path.join(os.environ["WAN_EXPERTS_OUTPUT"], entry["subfolder"], entry["filename"])
    with av.open(path) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}
    stored = json.dumps(tags)
    for key in (TYPED_KEY, "sk-linked-key-abcdef", "sk-by-name-key-987"):
        assert key not in stored
    kept = json.loads(tags["prompt"])
    assert kept["1"]["inputs"] == {"prompt": "a cat", "api_key": ""} and kept["3"]["inputs"]["api_key"] == ["2", 0]
    assert json.loads(tags["workflow"])["nodes"][0]["widgets_values"][:5] == ["a cat", "dashscope", "", "en", 7]
    assert prompt["1"]["inputs"]["api_key"] == TYPED_KEY  # the graph ComfyUI holds is not changed


@pytest.mark.parametrize("key", ["sk-broken\nkey-0123456789", "sk-broken key-0123456789", "sk-broken\u00e9key-0123456789"])
def test_key_is_in_no_error_or_log(pack, prompt_node, connections, server, caplog, key):  # noqa: F811
    """The HTTP client refuses a key with a line break and quotes the header (the SDK logs that error): the key is
    refused first, and neither the log nor the message holds it."""
    with caplog.at_level(logging.DEBUG), pytest.raises(pack.wan.errors.InputError, match="API key") as info:
        prompt_node.extend("a cat", "dashscope", "", "en", 7, api_key=key, base_url="")
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for part in ("sk-broken", "key-0123456789"):
        assert part not in logged and part not in str(info.value)
    assert connections == [] and server.requests == []


def test_service_error_that_quotes_the_key_is_redacted(pack):
    service = pack.wan.prompts.service
    key = "sk-0123456789"
    assert service.redact(f"header 'Bearer {key}' and {key!r}", key) == "header 'Bearer <api key>' and '<api key>'"
