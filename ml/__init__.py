"""The models: framework adapters (``adapters/``), nets, artifacts and their
checks, model builders, and out-of-memory splitting.

The bottom layer: it imports only ``turnout`` (the route table and the error
family), never ``router`` or ``workers``.
"""
