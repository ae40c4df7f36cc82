"""Errors the engine raises for bad input. Each message names the input, what was found and what to do."""


class WanError(Exception):
    """Base class of every error Wan Experts raises on purpose."""


class CheckpointError(WanError, ValueError):
    """A model file or folder cannot be used: missing, corrupt, of another kind, or with the wrong keys."""


class InputError(WanError, ValueError):
    """A call received tensors or settings the model cannot use (shapes, sizes, missing conditioning)."""
