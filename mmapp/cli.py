"""``mmapp`` command line: wiring only. Each sub-command lives in ``mmapp/commands/<name>.py``
and exposes ``register(subparsers)``; heavy imports happen inside the command's ``run``.

Exit codes: 0 done; 2 usage error (unknown option, out-of-range value such as ``--top-k 0``);
3 bad input, nothing done (an unreadable image, a refused question, a missing or wrong checkpoint,
a bad data file); 4 some inputs were bad and skipped (reported on stderr), the rest were done, or
(``caption``/``ask --strict``) some results came with warnings such as an out-of-domain image;
130 interrupted. ``MMAPP_DEBUG=1`` shows tracebacks instead of one-line errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from mmapp import __version__
from mmapp.errors import EXIT_BAD_INPUT, EXIT_PARTIAL, EXIT_USAGE, MMAppError, UsageError, format_error

COMMANDS = ("predict", "data", "features", "train", "eval", "app")
EPILOG = ("exit codes: 0 done, 2 usage error, 3 bad input (nothing done), 4 some inputs skipped (the rest done; "
          "with caption/ask --strict also: some results had warnings), 130 interrupted")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmapp",
        description="Image captioning and visual question answering with attention maps.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"mmapp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mmapp.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:  # bare `mmapp`
        parser.print_help()
        return 0
    if extra:  # key=value overrides may follow options: `train caption --out X a.b=1`
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:  # MMAppError is a ValueError
        if os.environ.get("MMAPP_DEBUG"):
            raise
        print(f"mmapp {args.command}: error: {format_error(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
