"""The name of a run started with ``python -c CODE``: the module the code runs, else ``python-c``.

Used by ``config.default_script_name`` (implicit runs) and by ``supabase-log run``.
``python -c "from jobs.sync import main; main()"`` is named ``jobs.sync``, as
``python -m jobs.sync`` would be: the first module the code imports that is
neither in the standard library nor this package. Code that imports none, or
does not parse, is named ``python-c``.
"""

from __future__ import annotations

import sys

FALLBACK = "python-c"
_NOT_THE_JOB = frozenset({"supabase_log_handler", "__future__"})
_OPTIONS_WITH_VALUE = frozenset({"-W", "-X", "--check-hash-based-pycs"})


def code_argument(argv: list[str]) -> str | None:
    """The CODE of ``-c CODE`` (or ``-cCODE``) in an interpreter's command line, if any.

    ``argv`` starts with the interpreter (``sys.orig_argv``) or with its first option.
    """
    i = 1 if argv and not argv[0].startswith("-") else 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-c":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-c"):
            return arg[2:]
        if arg in ("-m", "-") or not arg.startswith("-"):
            return None  # a module, stdin or a script: not -c
        i += 2 if arg in _OPTIONS_WITH_VALUE else 1
    return None


def name_for_code(code: str | None) -> str:
    """``from jobs.sync import main; main()`` -> ``jobs.sync``; ``print(1)`` -> ``python-c``."""
    if not code:
        return FALLBACK
    import ast  # only for -c runs

    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return FALLBACK
    stdlib: frozenset[str] = getattr(sys, "stdlib_module_names", frozenset())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".", 1)[0]
            if top not in stdlib and top not in _NOT_THE_JOB:
                return name
    return FALLBACK
