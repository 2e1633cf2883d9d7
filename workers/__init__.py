"""Celery workers: how each kind starts (``cpu/``, ``gpu/``, ``start.py``); a
worker's Celery app (``app.py``), its heartbeat and fencing (``heartbeat.py``)
and its entry point (``run.py``); the training worker (``training.py``); and
what runs in its pool children (``runtime.py``, ``board.py``, ``memory.py``).

Imports ``turnout.core`` and ``turnout.ml``; never ``turnout.router``.
"""
