"""``install()``: the one line that gives a script a SupabaseHandler on the root logger."""

from __future__ import annotations

import logging
import sys
from typing import Any

from . import context
from .handler import SupabaseHandler

__all__ = ["install"]


def install(
    level: int | str = logging.INFO, *, console: bool = True, **settings: Any
) -> SupabaseHandler:
    """Attach a SupabaseHandler to the root logger (once) and return it.

    With ``console`` and no other root handler, a plain stderr handler is added as
    well so the job's output still shows. The root level is lowered to ``level``
    if it is higher.
    """
    root = logging.getLogger()
    for existing in root.handlers:
        if isinstance(existing, SupabaseHandler) and not existing.closed:
            return existing
    handler = SupabaseHandler(**settings)
    if console and not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    root.addHandler(handler)
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    if isinstance(numeric, int) and handler.level != logging.NOTSET:
        numeric = min(numeric, handler.level)  # SUPABASE_LOG_LEVEL=DEBUG / DEBUG=true
    if isinstance(numeric, int) and (root.level == logging.NOTSET or root.level > numeric):
        root.setLevel(numeric)
    return handler


context.provide_installer(install)
