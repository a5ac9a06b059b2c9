"""Unit tests of ``supabase_log_handler._jsonsafe``: JSON that PostgreSQL accepts, never raising."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supabase_log_handler._jsonsafe import (
    MAX_DEPTH,
    clean_text,
    is_plain,
    safe_repr,
    safe_str,
    to_jsonable,
)


def dumps_strict(value: Any) -> str:
    """What the sinks need: strict JSON (no NaN/Infinity) that encodes as UTF-8."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    return text


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


class Size(enum.IntEnum):
    SMALL = 1


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str = "p"


@dataclasses.dataclass
class Node:
    name: str
    child: Any = None


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    def __repr__(self) -> str:
        return "BadStr()"


# -- clean_text ---------------------------------------------------------------------------
def test_clean_text_removes_nul_characters() -> None:
    """NUL characters, which PostgreSQL text rejects, are removed and nothing else changes."""
    assert clean_text("a\x00b\x00\x00c") == "abc"


def test_clean_text_replaces_lone_surrogate() -> None:
    """A lone surrogate becomes U+FFFD and the text around it is kept."""
    out = clean_text("a\ud800b")
    out.encode("utf-8")
    assert out[0] == "a" and out[-1] == "b"
    assert set(out[1:-1]) == {"\ufffd"}


def test_clean_text_keeps_valid_non_ascii() -> None:
    """Valid non-ASCII text (accents, CJK, emoji) is returned unchanged."""
    text = "café 日本 😀"
    assert clean_text(text) == text


def test_clean_text_ascii_fast_path_returns_same_object() -> None:
    """Plain ASCII text without NUL is returned as the very same object (no copy)."""
    text = "".join(["plain ", "ascii ", "text"])
    assert clean_text(text) is text


def test_clean_text_nul_and_surrogate_together() -> None:
    """Text with both a NUL and a lone surrogate comes out encodable and NUL-free."""
    out = clean_text("x\x00\udfffy")
    assert "\x00" not in out
    out.encode("utf-8")
    assert out.startswith("x") and out.endswith("y")


# -- safe_repr / safe_str -----------------------------------------------------------------
def test_safe_repr_of_raising_repr_names_the_type() -> None:
    """safe_repr of an object whose __repr__ raises is a marker naming its type."""
    assert safe_repr(BadRepr()) == "<unrepresentable BadRepr>"


def test_safe_str_falls_back_to_repr() -> None:
    """safe_str of an object whose __str__ raises falls back to its repr."""
    assert safe_str(BadStr()) == "BadStr()"


# -- to_jsonable: scalars -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
            "2024-05-06T07:08:09.123456+00:00",
        ),
        (dt.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
        (dt.date(2024, 5, 6), "2024-05-06"),
        (dt.time(7, 8, 9, 500), "07:08:09.000500"),
        (dt.timedelta(minutes=1, milliseconds=500), 60.5),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
        (PurePosixPath("/var/log/job.log"), "/var/log/job.log"),
        (b"abc", "abc"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff\xfe", "\\xff\\xfe"),
        (bytearray(b"xy"), "xy"),
        (memoryview(b"mv"), "mv"),
        (Colour.RED, "red"),
        (Colour.BLUE, 2),
        (Size.SMALL, 1),
        (True, True),
        (None, None),
        (7, 7),
        (1.25, 1.25),
    ],
    ids=repr,
)
def test_to_jsonable_scalar_conversions(value: Any, expected: Any) -> None:
    """Each supported scalar type converts to its documented JSON form."""
    out = to_jsonable(value)
    assert out == expected
    assert type(out) is type(expected)


def test_to_jsonable_real_path() -> None:
    """A pathlib.Path becomes its string form."""
    path = Path("/tmp") / "x.txt"
    assert to_jsonable(path) == str(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (decimal.Decimal("NaN"), "NaN"),
        (decimal.Decimal("Infinity"), "Infinity"),
        (decimal.Decimal("-Infinity"), "-Infinity"),
    ],
    ids=repr,
)
def test_non_finite_numbers_become_strings(value: Any, expected: str) -> None:
    """NaN and the infinities (float or Decimal) become marker strings, not JSON numbers."""
    assert to_jsonable(value) == expected


@pytest.mark.parametrize("text", ["1.5", "0.1", "-2.25", "100", "1.10"])
def test_decimal_exact_as_float_stays_a_number(text: str) -> None:
    """A Decimal that a float represents without loss stays a JSON number."""
    out = to_jsonable(decimal.Decimal(text))
    assert isinstance(out, float)
    assert decimal.Decimal(repr(out)) == decimal.Decimal(text)


@pytest.mark.parametrize(
    "text", ["12345678901234567890.123456789", "0.1000000000000000000001", "1E+400", "1E-400"]
)
def test_decimal_inexact_as_float_keeps_every_digit_as_text(text: str) -> None:
    """A Decimal that a float would round becomes its exact text."""
    out = to_jsonable(decimal.Decimal(text))
    assert isinstance(out, str)
    assert decimal.Decimal(out) == decimal.Decimal(text)


# -- to_jsonable: containers --------------------------------------------------------------
def test_set_is_sorted_when_sortable() -> None:
    """A set of mutually comparable items becomes a sorted list."""
    assert to_jsonable({3, 1, 2}) == [1, 2, 3]
    assert to_jsonable(frozenset({"b", "c", "a"})) == ["a", "b", "c"]


def test_unsortable_set_keeps_every_item() -> None:
    """A set whose items cannot be compared becomes a list holding every item."""
    out = to_jsonable({1, "a", None})
    assert isinstance(out, list)
    assert sorted(out, key=repr) == sorted([1, "a", None], key=repr)


def test_tuple_becomes_list() -> None:
    """A tuple (nested too) becomes a list."""
    assert to_jsonable((1, (2, 3))) == [1, [2, 3]]


def test_dataclass_becomes_dict_of_fields() -> None:
    """A dataclass instance becomes a dict of its fields, converted recursively."""
    assert to_jsonable(Point(1, float("nan"))) == {"x": 1, "y": "NaN", "label": "p"}


def test_dataclass_class_itself_is_not_expanded() -> None:
    """A dataclass type (not an instance) is rendered as its repr, not as fields."""
    assert to_jsonable(Point) == repr(Point)


def test_non_str_dict_keys_become_strings() -> None:
    """Non-string dict keys are turned into their str form."""
    out = to_jsonable({1: "a", None: "b", (1, 2): "c", 2.5: "d"})
    assert out == {"1": "a", "None": "b", "(1, 2)": "c", "2.5": "d"}


def test_dict_key_whose_str_raises_uses_repr() -> None:
    """A dict key whose __str__ raises is rendered with its repr instead."""
    assert to_jsonable({BadStr(): 1}) == {"BadStr()": 1}


def test_dict_keys_and_values_are_cleaned() -> None:
    """NUL and lone surrogates are cleaned out of dict keys and string values."""
    out = to_jsonable({"k\x00ey": "v\x00al", "s\ud800": 1})
    dumps_strict(out)
    assert out["key"] == "val"
    assert len(out) == 2


def test_self_referencing_list_marks_cycle() -> None:
    """A list containing itself yields "<cycle>" where it recurs."""
    items: list[Any] = [1]
    items.append(items)
    assert to_jsonable(items) == [1, "<cycle>"]


def test_self_referencing_dict_marks_cycle() -> None:
    """A dict containing itself yields "<cycle>" where it recurs."""
    data: dict[str, Any] = {"a": 1}
    data["self"] = data
    assert to_jsonable(data) == {"a": 1, "self": "<cycle>"}


def test_dataclass_cycle_marked() -> None:
    """A dataclass referring back to itself yields "<cycle>" where it recurs."""
    node = Node("n")
    node.child = node
    assert to_jsonable(node) == {"name": "n", "child": "<cycle>"}


def test_shared_reference_is_not_a_cycle() -> None:
    """The same object appearing twice side by side is converted twice, not marked a cycle."""
    shared = [1, 2]
    assert to_jsonable([shared, shared]) == [[1, 2], [1, 2]]


def test_depth_cap_replaces_deeper_containers() -> None:
    """Containers nested deeper than max_depth are replaced by "<max depth>"."""
    value: Any = "leaf"
    for _ in range(MAX_DEPTH + 3):
        value = [value]
    out = to_jsonable(value)
    depth = 0
    while isinstance(out, list):
        assert len(out) == 1
        out = out[0]
        depth += 1
    assert depth == MAX_DEPTH
    assert out == "<max depth>"


def test_custom_depth_cap() -> None:
    """max_depth=1 keeps the outer dict and replaces the nested one."""
    assert to_jsonable({"a": {"b": 1}, "c": 2}, max_depth=1) == {"a": "<max depth>", "c": 2}


def test_very_deep_nesting_does_not_raise() -> None:
    """A structure nested far beyond the recursion limit converts without raising."""
    value: Any = None
    for _ in range(100_000):
        value = [value]
    dumps_strict(to_jsonable(value))


def test_list_items_cap() -> None:
    """A list longer than max_items is cut, with a marker counting the rest."""
    assert to_jsonable(list(range(7)), max_items=5) == [0, 1, 2, 3, 4, "<2 more items>"]


def test_dict_items_cap() -> None:
    """A dict longer than max_items is cut, with a "<truncated>" entry counting the rest."""
    out = to_jsonable({f"k{i}": i for i in range(7)}, max_items=5)
    assert out == {"k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4, "<truncated>": "2 more items"}


def test_set_items_cap() -> None:
    """A set longer than max_items is cut after its smallest items."""
    assert to_jsonable(set(range(10)), max_items=3) == [0, 1, 2, "<7 more items>"]


def test_object_with_raising_repr() -> None:
    """An unknown object whose __repr__ raises becomes a marker naming its type."""
    assert to_jsonable({"x": BadRepr()}) == {"x": "<unrepresentable BadRepr>"}


def test_unknown_object_becomes_repr() -> None:
    """An unknown object becomes its repr string."""

    class Thing:
        def __repr__(self) -> str:
            return "Thing(\x00)"

    assert to_jsonable(Thing()) == "Thing()"


def test_input_is_not_mutated() -> None:
    """to_jsonable returns a copy and leaves the input untouched."""
    original: dict[str, Any] = {"a": [1, (2, 3)], "b": {"c": float("nan")}}
    out = to_jsonable(original)
    out["a"].append(99)
    assert original["a"] == [1, (2, 3)]
    assert math.isnan(original["b"]["c"])


def test_huge_int_output_json_dumps() -> None:
    """An int too long for int->str conversion still yields strict-JSON output."""
    out = to_jsonable({"n": 10**5000})
    dumps_strict(out)


def test_one_bad_nested_value_does_not_discard_its_siblings() -> None:
    """A nested value that cannot be converted is replaced on its own; siblings survive."""
    out = to_jsonable({"bad": decimal.Decimal("sNaN"), "good": 1})
    assert isinstance(out, dict)
    assert out["good"] == 1
    assert isinstance(out["bad"], str)


def test_mixed_structure_always_dumps_strictly() -> None:
    """A nasty mix of every supported type converts into strict JSON."""
    data: dict[Any, Any] = {
        "when": dt.datetime.now(dt.timezone.utc),
        "id": uuid.uuid4(),
        "amount": decimal.Decimal("3.14159265358979323846"),
        "colour": Colour.RED,
        "blob": b"\x00\xff",
        "path": Path("/x"),
        "tags": {"b", "a"},
        "point": Point(1, float("inf")),
        "nan": float("nan"),
        1: BadRepr(),
        "text": "nul\x00 surrogate \udc80",
    }
    data["loop"] = data
    dumps_strict(to_jsonable(data))


# -- is_plain -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ("s", True),
        (1, True),
        (1.5, True),
        (True, True),
        (None, True),
        (float("nan"), False),
        (float("inf"), False),
        ([], False),
        ({}, False),
        (Size.SMALL, False),
    ],
    ids=repr,
)
def test_is_plain(value: Any, plain: bool) -> None:
    """is_plain is true only for exact immutable JSON scalars (finite floats)."""
    assert is_plain(value) is plain


# -- property -----------------------------------------------------------------------------
# Any code point, lone surrogates and NUL included (hypothesis leaves surrogates out by default).
_any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20)
_leaves = (
    _any_text
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.binary(max_size=20)
    | st.none()
    | st.booleans()
)
_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(_any_text | st.integers(), children, max_size=6)
        | st.tuples(children, children)
    ),
    max_leaves=40,
)


def _strings(value: Any) -> list[str]:
    """Every string (dict keys included) inside a parsed JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    return []


@settings(max_examples=300, deadline=None)
@given(_values)
def test_property_to_jsonable_always_strict_json(value: Any) -> None:
    """For any nesting of text/floats/ints/bytes/None/lists/dicts, output is NUL-free strict UTF-8 JSON."""
    out = to_jsonable(value)
    text = json.dumps(out, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert not any("\x00" in s for s in _strings(json.loads(text)))
