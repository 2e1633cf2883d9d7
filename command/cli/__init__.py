"""The ``turnout`` command, on click (as Celery's own CLI is).

Each subcommand lives in the module named for it, parses its options and calls
into the packages; no business logic lives here. The CLI is the one layer that
may import every package (``router``, ``workers``, ``ml``, ``benchmarks``), and
it does so inside each command, so that ``turnout --help`` loads none of them.
``main()`` returns an exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from turnout.cli.api_keys import keys
from turnout.cli.context import cli
from turnout.cli.flower import flower
from turnout.cli.models import models, reload, routes
from turnout.cli.run import api, bench, chaos, up, worker
from turnout.cli.status import status
from turnout.cli.train import train
from turnout.core.errors import TurnoutError

for command in (up, api, worker, status, routes, models, reload, train, keys, flower, bench,
                chaos):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="turnout", standalone_mode=False)
    except TurnoutError as exc:
        print(f"turnout: error: {exc}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        return 130
    return int(result or 0)


__all__ = ["cli", "main"]
