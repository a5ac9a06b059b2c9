"""The public surface: __all__ is sorted, importable, and exactly what docs/api.md documents."""

from __future__ import annotations

import re

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
