"""Command line: ``python -m sadtalker_core <command>`` (``sadtalker <command>``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import SadTalkerError
from . import coeffs, extract, generate, render, weights
from .common import say


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sadtalker", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (weights, extract, coeffs, render, generate):
        command.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if a not in ("-v", "--verbose")), None)
    if first is not None and first.startswith("--") and first != "--help":
        argv.insert(argv.index(first), "generate")  # the official CLI has no sub-command
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        return args.func(args)
    except SadTalkerError as e:
        say(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
