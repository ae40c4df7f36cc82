"""Wan Experts: ComfyUI entry point.

ComfyUI imports this file as ``custom_nodes/<folder>/__init__.py`` under a mangled module name, so everything
below is imported relatively.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
