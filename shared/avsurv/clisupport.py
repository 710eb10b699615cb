"""What every ``avsurv`` sub-command shares: how it is declared, and bad input becomes one line on stderr and
exit code 2."""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from avsurv.errors import MediaError, ModelError, TaskError

Handler = Callable[[argparse.Namespace], int]


def reports_errors(command: str) -> Callable[[Handler], Handler]:
    """Turns bad input (TaskError, ModelError, MediaError, unreadable files) into one line on stderr and
    exit code 2."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except (TaskError, ModelError, MediaError, OSError) as error:
                print(f"avsurv {command}: error: {error}", file=sys.stderr)
                return 2

        return run

    return wrap


def add_command(subparsers: argparse._SubParsersAction, name: str, run: Handler, help: str) -> argparse.ArgumentParser:
    """Adds sub-command ``name``: ``help`` is its line in the parent's --help; the docstring of ``run`` opens its
    own, so what the command does is written once, at the code that does it. ``run(args)``, stored as ``func``,
    returns the exit code."""
    parser = subparsers.add_parser(name, help=help, description=inspect.getdoc(run))
    parser.set_defaults(func=run)
    return parser


def add_embeddings(parser: argparse.ArgumentParser, name: str, help: str, *, required: bool = False,
                   metavar: str = "EMB.npz") -> None:
    """Declares an argument taking one or more embeddings files of ``avsurv embed``; a required option says so
    at the end of its help, as every command's required options do."""
    if required:  # not passed otherwise: argparse refuses ``required`` on a positional, which is required anyway
        parser.add_argument(name, nargs="+", type=Path, required=True, metavar=metavar, help=f"{help} (required)")
    else:
        parser.add_argument(name, nargs="+", type=Path, metavar=metavar, help=help)
