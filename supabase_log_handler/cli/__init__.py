"""The ``supabase-log`` command (also ``python -m supabase_log_handler``).

Owns the argument parsing and the dispatch to one module per command:
``run`` (wrapper.py), ``runs``/``logs``/``errors``/``stats`` (views.py), ``tail``
(tail.py), ``calls``/``calls stats`` (calls.py), ``migrate`` (migrate.py),
``doctor`` (doctor.py), ``push`` (push.py), ``schedule``/``check``/``prune``
(watch.py), ``digest`` (digest.py) and ``ui`` (``supabase_log_handler/ui/command.py``). ``main(argv)`` returns the exit code: the command's own for ``run``,
0 for success, 1 when something was found wrong, 2 for usage and setup errors.
See docs/cli.md for the reference.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__, autoattach, capture
from ..errors import ConfigurationError, DeliveryError
from ..ui import command as ui_command
from . import calls, digest, doctor, migrate, push, tail, views, wrapper
from . import watch as watch_commands
from ._common import CommandError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supabase-log",
        description="Record job runs and their logs in Supabase (or the local store), and look at them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--env-file", help="read settings from this .env file (default: the nearest .env)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run",
        help="run a command as one recorded run",
        description="Open a run, run COMMAND in it and record its logs (Python programs) or its output "
        "(any other command). Exits with the command's exit code.",
        usage="supabase-log run [--script-name NAME] [--triggered-by WHO] [--mode MODE] [--no-capture-print] -- COMMAND [ARGS...]",
    )
    p.add_argument("--script-name", "-n", help="the run's script_name (default: from the command)")
    p.add_argument(
        "--triggered-by",
        "-t",
        help="manual, cron, ... (default: $SUPABASE_LOG_TRIGGERED_BY, else detected)",
    )
    p.add_argument(
        "--mode",
        choices=("auto", "python", "output"),
        default="auto",
        help="python: attach the handler inside the program; output: record stdout/stderr lines; "
        "auto (default): python for Python interpreters and #!python scripts",
    )
    p.add_argument(
        "--tail-lines",
        type=int,
        default=20,
        help="stderr lines kept in error_message on failure (default 20)",
    )
    p.add_argument(
        "--no-capture-print",
        dest="capture_print",
        action="store_false",
        help="Python mode: do not store what the program prints (sets SUPABASE_LOG_CAPTURE_PRINT=false)",
    )
    p.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the command, after --"
    )
    p.set_defaults(func=_cmd_run)

    views.add_parsers(sub)
    tail.add_parser(sub)
    calls.add_parser(sub)
    migrate.add_parser(sub)
    doctor.add_parser(sub)
    push.add_parser(sub)
    watch_commands.add_parsers(sub)
    digest.add_parser(sub)
    ui_command.add_parser(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    return wrapper.run_command(
        list(args.command),
        script_name=args.script_name,
        triggered_by=args.triggered_by,
        mode=args.mode,
        env_file=args.env_file,
        tail_lines=args.tail_lines,
        capture_print=args.capture_print,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``supabase-log`` with ``argv`` (default: the process's arguments); returns the exit code."""
    capture.uninstall()  # started from inside a wrapped program: this process records nothing itself
    autoattach.detach()
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
        return code
    except CommandError as exc:
        print(f"supabase-log: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except ConfigurationError as exc:
        print(f"supabase-log: configuration: {exc}", file=sys.stderr, flush=True)
        return 2
    except DeliveryError as exc:
        fix = getattr(exc, "fix", None)
        print(
            f"supabase-log: {exc}" + (f"\n  fix: {fix}" if fix else ""), file=sys.stderr, flush=True
        )
        return 1
    except BrokenPipeError:  # e.g. `supabase-log logs ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130


__all__ = ["build_parser", "main"]
