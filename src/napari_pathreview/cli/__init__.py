"""The ``pathreview`` command: the same pipelines as the widgets, from a shell.

Exit codes: 0 ok, 2 bad input (one line on stderr), 1 internal error, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import sys
import warnings

from ..backend.errors import InputError
from .common import WARNED, cli_words, one_line_warning
from .parser import build_parser, check_options

__all__ = ["build_parser", "check_options", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_options(args)
        WARNED.clear()  # each warning once per command
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            return int(args.func(args) or 0)
    except InputError as e:
        print("pathreview: error: " + cli_words(str(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pathreview: cancelled", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(
            f"pathreview: internal error: {type(e).__name__}: {' '.join(str(e).split())} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
