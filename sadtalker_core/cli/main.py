"""Command line: ``python -m sadtalker_core <command>`` (``sadtalker <command>``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from ..errors import SadTalkerError
from . import coeffs, extract, generate, render, serve, weights
from .common import say

DESCRIPTION = (
    "SadTalker: one portrait photo + speech -> a lip-synced talking-head video. "
    "'sadtalker COMMAND --help' lists the options of a command; without a command the official "
    "inference.py flags work as they are (generate)."
)
TERMINATED = 143  # exit status of a run stopped by SIGTERM (128 + 15), as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the Ctrl-C path: every writer removes its partial file as the
    stack unwinds."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sadtalker", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (weights, extract, coeffs, render, generate, serve):
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
    terminated = threading.Event()

    def on_sigterm(signum, frame) -> None:
        terminated.set()
        raise Terminated()

    previous = _hook(signal.SIGTERM, on_sigterm)
    try:
        code = args.func(args)
    except SadTalkerError as e:
        say(f"error: {e}", file=sys.stderr)
        code = 1
    except Terminated:
        code = TERMINATED
    finally:
        _hook(signal.SIGTERM, previous)
    return TERMINATED if terminated.is_set() else code


def _hook(signum: int, handler):
    """Set a signal handler from the main thread (elsewhere, e.g. main() called from a worker
    thread, leave signals alone); returns the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
