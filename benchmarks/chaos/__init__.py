"""``turnout chaos``: the reliability suite, a program rather than a unit test.

It starts its own stack on free ports (an embedded Redis with its AOF, a CPU
worker, two GPU workers on the CPU, the API, and a supervisor that restarts
what dies), runs the fault scenarios of ``scenarios.py`` against it, and counts
every job through the execution ledger the workers write (TURNOUT_LEDGER).
"""
