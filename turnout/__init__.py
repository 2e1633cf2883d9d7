"""Turnout: a GPU-aware, multi-queue inference router.

One import name holds it all, each layer importing only those below it
(pyproject.toml's import-linter contract):

- ``turnout.cli``: the ``turnout`` command (click);
- ``turnout.benchmarks``: ``turnout bench`` and ``turnout chaos``;
- ``turnout.stack``: ``turnout up``'s stack, its supervisor, the embedded Redis;
- ``turnout.router`` (the HTTP side) and ``turnout.workers`` (the Celery workers);
- ``turnout.ml``: framework adapters and model building;
- ``turnout.core``: what every process shares (settings, the route table,
  errors, Redis key names, the Celery app, the typed messages, the input kinds);
- ``turnout.client``: the Python client, on httpx alone.

``router``, ``workers``, ``ml``, ``benchmarks`` and ``command`` (``cli`` and
``stack``) are folders at the top of the repository, mapped into this
namespace by the distribution.
"""

__version__ = "0.1.0"
