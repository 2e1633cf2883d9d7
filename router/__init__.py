"""The HTTP router alone: the API (``turnout.router.api``), input validation, the
routing decision, micro-batching, publishing task messages, and results.

It imports only ``turnout`` (the shared core): never ``workers`` or ``ml``, and
never torch or scikit-learn. It sends tasks by name (``turnout.core.celery_app``).
"""
