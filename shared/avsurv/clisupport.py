"""What every ``avsurv`` sub-command shares: bad input becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

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
