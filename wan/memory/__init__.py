"""Memory: placing models on a device and leaving it (``place``, ``swap``, ``transfers``), block streaming
(``offload``), and the facts of RAM and devices (``ram``, ``devices``).

May import: ``wan.errors`` only.
Never imports models, sampling, the budget or the run: they build on it.
"""
