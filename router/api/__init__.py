"""The FastAPI application: ``app.create_app`` and one module per group of
routes, with the predict fast path in front. Errors from ``turnout.core.errors``
become HTTP codes here (``errors.py``) and nowhere else. Imports ``router``
and ``turnout`` only."""
