"""Secrets typed into a graph (the Dashscope API key of Wan Prompt Extend) kept out of what a saved file stores.

ComfyUI hands an output node the graph twice: the prompt (API format: each node's inputs by name) and the workflow
(UI format: each node's widget values by position). The secret values are read from the prompt, following a link to
the node that types the value, and every occurrence of them is removed from copies of both. The graph ComfyUI holds
is left untouched.
"""
from __future__ import annotations

# node id -> the inputs that hold a secret
SECRET_INPUTS = {"WanExpertsPromptExtend": ("api_key",)}
REMOVED = ""  # what a secret becomes in the saved copy (an empty key: the server's DASH_API_KEY)


def without_secrets(prompt, extra_pnginfo) -> tuple:
    """Copies of ``prompt`` and ``extra_pnginfo`` with every secret typed into the graph removed."""
    secrets = typed_secrets(prompt) | _widget_secrets(extra_pnginfo)
    if not secrets:
        return prompt, extra_pnginfo
    ordered = sorted(secrets, key=len, reverse=True)  # a longer secret first when one holds another
    return _scrubbed(prompt, ordered), _scrubbed(extra_pnginfo, ordered)


def typed_secrets(prompt) -> set[str]:
    """The non-empty values of the secret inputs in an API-format prompt; for a linked input, the string values of
    the node it comes from (a primitive or text node that holds the key)."""
    nodes = prompt if isinstance(prompt, dict) else {}
    found = set()
    for node in nodes.values():
        names = SECRET_INPUTS.get(node.get("class_type")) if isinstance(node, dict) else None
        inputs = node.get("inputs") if names else None
        for name in names or ():
            value = inputs.get(name) if isinstance(inputs, dict) else None
            if isinstance(value, list) and value:  # a link: [source node id, output index]
                source = nodes.get(str(value[0]))
                values = source.get("inputs", {}).values() if isinstance(source, dict) else ()
                found.update(v for v in values if isinstance(v, str))
            elif isinstance(value, str):
                found.add(value)
    return {s for s in found | {s.strip() for s in found} if s.strip()}


def _widget_secrets(extra_pnginfo) -> set[str]:
    """Secrets a UI-format workflow stores by name (a node whose widget values are a dict)."""
    workflow = extra_pnginfo.get("workflow") if isinstance(extra_pnginfo, dict) else None
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    found = set()
    for node in nodes if isinstance(nodes, list) else ():
        values = node.get("widgets_values") if isinstance(node, dict) else None
        if isinstance(values, dict):
            found.update(v.strip() for name in SECRET_INPUTS.get(node.get("type"), ())
                         if isinstance(v := values.get(name), str) and v.strip())
    return found


def _scrubbed(value, secrets: list[str]):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REMOVED)
        return value
    if isinstance(value, dict):
        return {_scrubbed(k, secrets): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, secrets) for v in value]
    return value
