"""Turnout's core, which every process shares, and the ``turnout`` command.

The core: ``settings`` (the one home for ``TURNOUT_*``), ``routes`` (the route
table), ``errors`` (the error family), ``keys`` (Redis key names),
``celery_app`` (the Celery app and its configuration), ``heartbeats``. These
import nothing from ``router``, ``workers``, ``ml`` or ``benchmarks``.

The command: ``cli`` (click), ``stack`` (``turnout up``'s supervisor, on
``supervisor.Part``) and ``redis_server`` (the embedded Redis). The CLI and
the stack may import every package; nothing imports them.
"""
