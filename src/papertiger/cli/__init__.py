"""The ``papertiger`` command.

Each module registers its own subcommands (``register(subparsers)``), so
this one only dispatches:

=========================  ===============================================
``demo``                   :mod:`.demo`
``serve``, ``daemon``,     :mod:`.daemon`
``gc``
``inspect``, ``get``,      :mod:`.read`
``list``
``bench``                  :mod:`papertiger.bench.cli` (needs the ``bench``
                           extra for its charts and peers)
=========================  ===============================================
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["build_parser", "main"]

#: Modules that contribute subcommands, in the order ``--help`` lists them.
FEATURE_MODULES = (
    "papertiger.cli.demo",
    "papertiger.cli.daemon",
    "papertiger.cli.read",
    "papertiger.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="papertiger",
        description="A shared store of Stripe-shaped data for parallel Python tests.",
    )
    parser.add_argument("--version", action="version", version=f"papertiger {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in FEATURE_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `papertiger list ... | head`: the reader left early
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
