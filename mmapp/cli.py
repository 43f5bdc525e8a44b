"""``mmapp`` command line: wiring only. Each sub-command lives in ``mmapp/commands/<name>.py``
and exposes ``register(subparsers)``; heavy imports happen inside the command's ``run``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from mmapp.errors import format_error

COMMANDS = ("predict", "data", "features", "train", "eval", "app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmapp",
        description="Image captioning and visual question answering with attention maps.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mmapp.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
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
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
