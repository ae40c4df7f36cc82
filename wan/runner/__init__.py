"""The whole command-line run: ``pipeline`` (``Settings`` and ``run``: load, encode, sample, decode, save, the way
``python -m wan.generate`` does), ``extend`` (a run continued from a video's last frames), ``s2v`` and ``vace`` (the
flags and sources of those tasks), ``demo`` (tiny random-weight models in the real file layouts, for ``--demo``).

May import every other part of the engine; nothing in the engine imports it except ``wan.generate``.
"""
