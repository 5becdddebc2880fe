"""``dagster`` with the steps' fork server started first: ``python -m pipelines.dagster_cli asset materialize …``.

The ``dagster`` console script imports Dagster and its CLI (~1.3 s) before it loads the code location,
and the executor starts the fork server only when it launches the first step; the server then
needs ~3-4 s of imports before any step can start (``pipelines/fork_server.py``). Started here,
before anything else is imported, the server does those imports on the other core while the CLI
loads and launches the run. ``make demo`` runs the CLI this way; the arguments are the CLI's own.
"""

from __future__ import annotations

import sys

from pipelines.fork_server import start_fork_server


def main(argv: list[str] | None = None) -> int:
    start_fork_server()
    from dagster._cli import main as dagster_main  # what the `dagster` console script calls

    sys.argv = ["dagster", *(sys.argv[1:] if argv is None else argv)]
    return dagster_main()


if __name__ == "__main__":
    sys.exit(main())
