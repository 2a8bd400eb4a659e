"""The `workbench` command: one subcommand per verb, each a thin layer over the library.

Each module here registers its verbs (`register`) and runs them; the option groups several verbs share
live in options.py. Bad input anywhere raises `WorkbenchError`; `main` turns it into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from workbench.errors import WorkbenchError, os_error_line


class Parser(argparse.ArgumentParser):
    """argparse, but its usage errors are one line (and still exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        raise WorkbenchError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from workbench import __version__
    from workbench.cli import dashboard, export, models, search, study, train

    parser = Parser(prog="workbench", description="Architecture ablations and NAS studies for MobileViT v1/v2/v3.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in (models, export, train, study, search, dashboard):
        module.register(sub)
    study.register_fidelity(sub)
    return parser


def _terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    # SIGTERM (a scheduler, `kill`, a container stopping) ends the command like Ctrl-C: running trials are
    # given back as interrupted and the local Ray is shut down, instead of dying with its helpers left behind.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except WorkbenchError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the command needed: permission, missing, no space, read-only
        if isinstance(e, BrokenPipeError):
            return _reader_left()
        print(f"workbench: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


def _reader_left() -> int:
    """`workbench count ... | head`: the reader left; say nothing more."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
