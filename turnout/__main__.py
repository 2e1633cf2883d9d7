"""``python -m turnout`` and the ``turnout`` console script.

The command needs the server's packages (``pip install 'turnout[server]'``);
a client-only install has the console script too, so it says what to install
rather than dying on an import.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from turnout.cli import main as run
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "turnout":
            raise
        print(f"turnout: the turnout command needs the server's packages ({exc.name} is not "
              "installed): pip install 'turnout[server]'", file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main())
