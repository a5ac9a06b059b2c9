"""The shapes that modules low in the import graph need of a run and of a handler.

``context``, ``runlog`` and ``lifecycle`` hold runs and handlers without importing
``runs`` or ``handler`` (which import them): these protocols name what they use.
"""

from __future__ import annotations

from typing import Any, Protocol


class RunLike(Protocol):
    """What is asked of a run by the modules below ``runs``."""

    id: str
    script_name: str
    announced: set[int]  # handlers (by serial) that have queued the opening row
    recent_errors: Any
    cancelled: bool

    @property
    def finished(self) -> bool: ...

    @property
    def owned(self) -> bool: ...

    @property
    def current_step(self) -> str | None: ...

    def open_row(self) -> dict[str, Any] | None: ...

    def activate(self) -> Any: ...

    def cancel(self) -> None: ...

    def progress(self) -> dict[str, Any]: ...

    def finish(self, status: str | None = None, error: BaseException | str | None = None) -> Any: ...


class HandlerLike(Protocol):
    """What the process hooks ask of a handler."""

    settings: Any

    @property
    def closed(self) -> bool: ...

    def close(self, timeout_s: float | None = None) -> bool: ...

    def before_fork(self) -> None: ...
