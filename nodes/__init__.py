"""ComfyUI nodes of Wan Experts: thin adapters from graph types to ``wan`` engine calls.

Each module lists its nodes in ``NODES`` (id -> class); display names come from each class's ``DISPLAY_NAME``.
"""
from . import (animate, bridge, cache, compile, dit, encoders, long_video, lora, prompts, refine, s2v, sampling, vace,
               vae, video)

_MODULES = (dit, lora, compile, encoders, bridge, vae, sampling, cache, video, prompts, long_video, refine, s2v, vace,
            animate)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
for _module in _MODULES:
    for _node_id, _cls in _module.NODES.items():
        assert _node_id.startswith("WanExperts") and _node_id not in NODE_CLASS_MAPPINGS, _node_id
        NODE_CLASS_MAPPINGS[_node_id] = _cls

NODE_DISPLAY_NAME_MAPPINGS = {node_id: cls.DISPLAY_NAME for node_id, cls in NODE_CLASS_MAPPINGS.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
