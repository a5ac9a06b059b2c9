"""The public surface: __all__ is sorted, importable, and exactly what docs/api.md documents."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

import supabase_log_handler


def test_all_is_sorted_and_importable() -> None:
    """Every name in __all__ exists, and __all__ is sorted."""
    names = supabase_log_handler.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, then classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(supabase_log_handler, name), name


def test_docs_api_lists_exactly_the_public_names() -> None:
    """docs/api.md mentions every public name, and every backticked top-level name it lists is public."""
    doc = (ROOT / "docs" / "api.md").read_text()
    first_cells = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", doc, flags=re.M)
    documented = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    public = set(supabase_log_handler.__all__)
    assert public - documented == set(), "public but undocumented"
    assert documented - public == set(), "documented but not public"


def test_repr_names_the_destination_and_never_a_secret(tmp_path: Path) -> None:
    """A handler's repr (seen in logging.root.handlers, tracebacks, debuggers) hides keys and passwords."""
    handlers = [
        supabase_log_handler.SupabaseHandler(
            sink="postgres", db_url="postgresql://u:pw-s3cret@db.example:6543/postgres",
            spool_path=str(tmp_path), install_signal_handlers=False),
        supabase_log_handler.SupabaseHandler(
            url="https://abc.supabase.co", key="sb_secret_k3y-s3cret", spool_path=str(tmp_path),
            install_signal_handlers=False),
        supabase_log_handler.SupabaseHandler(
            url=None, local_path=str(tmp_path / "l.db"), spool_path=str(tmp_path),
            install_signal_handlers=False),
    ]  # fmt: skip
    try:
        shown = [repr(h) for h in handlers]
    finally:
        for h in handlers:
            h.close()
    assert "db.example" in shown[0] and "pw-s3cret" not in shown[0]
    assert "abc.supabase.co" in shown[1] and "k3y-s3cret" not in shown[1]
    assert str(tmp_path / "l.db") in shown[2]
