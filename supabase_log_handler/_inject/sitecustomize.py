"""Loaded by every Python process started under ``supabase-log run``.

``supabase-log run`` puts this directory first on ``PYTHONPATH``. Python imports
``sitecustomize`` at start-up, so this file runs before the program's code: it
imports any other ``sitecustomize`` that would have been found without this one
(so an environment's own customisation still runs), then attaches the handler
(``supabase_log_handler.autoattach.attach``) and lets it record what the program
prints (``supabase_log_handler.capture``, unless ``SUPABASE_LOG_CAPTURE_PRINT=false``).
Nothing here may break the program: every failure is one line on stderr.
"""

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _same_dir(entry: str) -> bool:
    try:
        return os.path.abspath(entry or os.getcwd()) == _HERE
    except OSError:
        return False


def _chain() -> None:
    """Import the ``sitecustomize`` this one shadows, if there is one."""
    sys.path[:] = [p for p in sys.path if not _same_dir(p)]  # keep the program's sys.path clean
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    ours = sys.modules.get("sitecustomize")
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        if ours is not None:
            sys.modules["sitecustomize"] = ours
        print(
            f"Error in sitecustomize ({spec.origin}); set PYTHONVERBOSE for traceback:",
            file=sys.stderr,
        )
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)


def _attach() -> None:
    try:
        from supabase_log_handler.autoattach import attach
    except Exception as exc:
        print(
            f"supabase-log-handler: not attached to {sys.executable} "
            f"(install supabase-log-handler in this interpreter): {exc}",
            file=sys.stderr,
        )
        return
    try:
        handler = attach()
    except Exception as exc:
        print(
            f"supabase-log-handler: could not attach the handler: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return
    if handler is None:
        return
    try:
        from supabase_log_handler.capture import install

        install(handler)
    except Exception as exc:
        print(
            f"supabase-log-handler: print() is not recorded: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


_chain()
_attach()
