"""The core every Turnout process shares: settings, the route table, the error
family, Redis key names, the Celery app, the typed messages and the input kinds.

It imports none of the parts (``turnout.router``, ``turnout.workers``,
``turnout.ml``) and none of the command; an import-linter ``layers`` contract
(pyproject.toml) checks it, for every module in this package.
"""
