"""The `workbench` command: one subcommand per verb, each a thin layer over the library.

Each module here registers its verbs (`register`) and runs them; the option groups several verbs share
live in options.py. Bad input anywhere raises `WorkbenchError`; `main` turns it into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from workbench.errors import WorkbenchError, install_interrupt_handlers, interrupt_of, one_line, os_error_line


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
    for verb in sub.choices.values():  # every verb's tables fit 120 columns unless --wide
        if "--wide" not in verb._option_string_actions:
            verb.add_argument("--wide", action="store_true", help="every column and line at full width (tables "
                              "and long lines are folded to 120 columns otherwise)")
    return parser


def main(argv: list[str] | None = None) -> int:
    install_interrupt_handlers()
    try:
        args = build_parser().parse_args(argv)
        from workbench.cli.options import resolve_storage

        resolve_storage(args)  # --storage-env read; a password on the command line warned about
        from workbench.table import CONSOLE_WIDTH, set_console_width

        set_console_width(None if getattr(args, "wide", False) else CONSOLE_WIDTH)
        return args.func(args)
    except WorkbenchError as e:
        print(f"workbench: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the command needed: permission, missing, no space, read-only
        if isinstance(e, BrokenPipeError):
            return _reader_left()
        print(f"workbench: error: {one_line(os_error_line(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        e = interrupt_of(e)
        signum = e.signum
        print(f"workbench: {e.line}", file=sys.stderr, flush=True)
        _leave_ray(128 + int(signum))
        return 128 + int(signum)


def _leave_ray(code: int) -> None:
    """After an interrupt, shut this process's Ray down within seconds and exit with `code`. A signal sent to the
    whole process group (a terminal's Ctrl-C, a scheduler's stop) ends Ray's own services too, and Ray's exit
    hook then waits 60 s for them before it ends the process with status 1."""
    import os
    import threading

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    done = threading.Thread(target=ray.shutdown, daemon=True)
    done.start()
    done.join(timeout=10)
    if not done.is_alive():  # Ray is down: no leftovers for the next start to end
        from workbench.engine.rayproc import forget_own_record

        forget_own_record()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _reader_left() -> int:
    """`workbench count ... | head`: the reader left; say nothing more."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
