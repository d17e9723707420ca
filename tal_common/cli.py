"""What every command-line tool of the package shares: the help layout, renamed options, closed pipes, Ctrl-C.

* :class:`HelpFormatter`: descriptions and example epilogs printed as written, each option's default shown.
* :func:`parse_args`: old option spellings keep working, with one deprecation line each.
* :func:`entry_point`: a ``main`` whose stdout reader went away (``tool ... | head -1``) ends quietly (exit 141).
* :func:`interrupted`: the one-line Ctrl-C message, exit status 130.
* :func:`worker_ignores_sigint`: the ``worker_init_fn`` of every DataLoader, so that Ctrl-C (a SIGINT to the whole
  process group) reaches the main process as ``KeyboardInterrupt`` instead of killing workers mid-batch, which
  torch reports as "DataLoader worker exited unexpectedly".
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
from types import TracebackType
from typing import Callable, Mapping, Sequence

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader exited


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Description and epilog kept as written (examples stay one per line); ``(default: X)`` appended to an
    option's help unless the help already says its default or there is none to show (``None``, a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "default" in text or nothing or action.default == []:  # identity: 0 is a default worth showing
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: %(default)s)"


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               renamed: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (``sys.argv[1:]`` when ``None``).

    ``renamed`` maps old option spellings to the current ones (``{"--out": "--output"}``): an old spelling,
    also as ``--out=DIR``, is replaced before parsing and prints one line ``PROG: --out is deprecated, use
    --output`` on stderr. The old spellings are not listed in ``--help``.
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    renamed = renamed or {}
    warned: set[str] = set()
    out: list[str] = []
    for i, token in enumerate(tokens):
        if token == "--":
            out.extend(tokens[i:])
            break
        name, eq, value = token.partition("=")
        if name in renamed:
            if name not in warned:
                print(f"{parser.prog}: {name} is deprecated, use {renamed[name]}", file=sys.stderr)
                warned.add(name)
            token = renamed[name] + eq + value
        out.append(token)
    return parser.parse_args(out)


def interrupted(prog: str, advice: str) -> int:
    """Ctrl-C: print ``PROG: interrupted; ADVICE`` (what is kept, what to rerun) and return 130."""
    print(f"{prog}: interrupted; {advice}", file=sys.stderr)
    return EXIT_INTERRUPTED


def entry_point(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a tool's ``main(argv) -> exit status`` so that a closed stdout (the reader of a pipe exited, e.g.
    ``| head -1``) ends it quietly with status 141 instead of a ``BrokenPipeError`` traceback."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            status = main(argv)
            sys.stdout.flush()  # inside the try: a pipe closed after the last print fails here, not at exit
            return status
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE

    return wrapper


def _silence_stdout() -> None:
    """Point the stdout file descriptor at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced sys.stdout (tests) has no descriptor
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def worker_ignores_sigint(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGINT; the main process handles Ctrl-C and stops it.

    Stopped that way, the main process may drop a connection of the worker's file-descriptor sharing thread
    (multiprocessing's resource sharer, which hands batches' tensors over, and reports errors through
    ``sys.excepthook``) mid-transfer; that ``EOFError``/``ConnectionError`` is an expected end, not a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = _quiet_lost_sharer


def _quiet_lost_sharer(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if threading.current_thread().name.endswith("(_serve)") and issubclass(exc_type, (EOFError, ConnectionError)):
        return
    sys.__excepthook__(exc_type, exc, tb)
