"""Celery workers: how each kind starts (``cpu/``, ``gpu/``, ``start.py``), the
worker built from a spec (``factory.py``), and what runs in its pool children
(``runtime.py``, ``board.py``, ``memory.py``).

Imports ``turnout`` and ``ml``; never ``router``.
"""
