"""Unit tests of ``supabase_log_handler._redact``: secrets masked under keys and in text."""

from __future__ import annotations

from typing import Any

import pytest

from supabase_log_handler._redact import MASK, Redactor

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UifQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
OPENAI_KEY = "sk-proj-abcdefghijklmnop1234567890"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


# -- sensitive keys -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "access_token",
        "api_key",
        "x-api-key",
        "Authorization",
        "cookie",
        "client_secret",
        "PASSWORD",
        "refresh_token",
        "apikey",
        "Set-Cookie",
        "service_role_key",
        "session_id",
        "jwt",
        "db passwd",
    ],
)
def test_sensitive_key_detected(redactor: Redactor, key: str) -> None:
    """Keys naming a secret (whole, or by their last word) are sensitive, in any case or separator."""
    assert redactor.is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "token_count", "tokens_used", "model", "user", "password_hint_shown_at", "rows"],
)
def test_harmless_key_not_sensitive(redactor: Redactor, key: str) -> None:
    """Keys whose last word is not a secret word (max_tokens, token_count ...) are not sensitive."""
    assert not redactor.is_sensitive_key(key)


def test_sensitive_values_masked_in_nested_meta(redactor: Redactor) -> None:
    """Values under sensitive keys are masked at any depth, inside dicts and lists."""
    meta = {
        "password": "hunter2",
        "db": {"db_password": "pw", "host": "db.local"},
        "headers": [{"Authorization": "Basic abc", "x-api-key": "k1"}, {"cookie": "c=1"}],
        "oauth": {"access_token": "at", "client_secret": "cs", "api_key": "ak"},
    }
    assert redactor.value(meta) == {
        "password": MASK,
        "db": {"db_password": MASK, "host": "db.local"},
        "headers": [{"Authorization": MASK, "x-api-key": MASK}, {"cookie": MASK}],
        "oauth": {"access_token": MASK, "client_secret": MASK, "api_key": MASK},
    }


def test_usage_counters_and_model_kept(redactor: Redactor) -> None:
    """max_tokens, token_count, tokens_used and model keep their values."""
    meta = {"max_tokens": 512, "token_count": 12, "tokens_used": 99, "model": "gpt-4o"}
    assert redactor.value(meta) == meta


def test_sensitive_key_with_container_value_masked_whole(redactor: Redactor) -> None:
    """A dict or list stored under a sensitive key is replaced whole by the mask."""
    assert redactor.value({"auth": {"user": "u", "pw": "p"}, "token": [1, 2]}) == {
        "auth": MASK,
        "token": MASK,
    }


def test_none_under_sensitive_key_kept(redactor: Redactor) -> None:
    """None under a sensitive key stays None (nothing to hide, and it shows the key was unset)."""
    assert redactor.value({"password": None}) == {"password": None}


def test_extra_keys_are_sensitive() -> None:
    """Keys configured with extra_keys are matched whole, case and separator insensitively."""
    red = Redactor(extra_keys=["ssn", "Card-Number", "  "])
    assert red.value({"SSN": "1", "card_number": "2", "name": "x"}) == {
        "SSN": MASK,
        "card_number": MASK,
        "name": "x",
    }


def test_value_does_not_mutate_input(redactor: Redactor) -> None:
    """value() returns a copy; the input keeps its secrets."""
    meta = {"password": "hunter2", "inner": {"token": "t"}}
    redactor.value(meta)
    assert meta == {"password": "hunter2", "inner": {"token": "t"}}


def test_strings_in_meta_are_text_scanned(redactor: Redactor) -> None:
    """String values under harmless keys are still scanned for secret shapes."""
    out = redactor.value({"note": f"used {SB_SECRET}", "items": [f"jwt {JWT}"]})
    assert out == {"note": f"used {MASK}", "items": [f"jwt {MASK}"]}


def test_scalars_pass_through_value(redactor: Redactor) -> None:
    """Numbers, booleans and None pass through value() unchanged."""
    assert redactor.value([1, 2.5, True, None]) == [1, 2.5, True, None]


@pytest.mark.parametrize("key", ["accessToken", "clientSecret", "refreshToken", "privateKey"])
def test_camel_case_sensitive_keys_masked(redactor: Redactor, key: str) -> None:
    """camelCase secret keys are masked in meta as their snake_case forms are."""
    assert redactor.value({key: "s3cr3t-value"}) == {key: MASK}


# -- text shapes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token is {JWT} ok", f"token is {MASK} ok"),
        (f"key={SB_SECRET}", f"key={MASK}"),
        (f"using {SB_SECRET} now", f"using {MASK} now"),
        (f"openai {OPENAI_KEY}", f"openai {MASK}"),
        ("Authorization header: Bearer abcdefgh12345678", f"Authorization header: Bearer {MASK}"),
        ("got bearer abc.def-ghi_jkl~mno", f"got bearer {MASK}"),
        ("password=hunter2", f"password={MASK}"),
        (
            "login failed; db_password=hunter2 user=bob",
            f"login failed; db_password={MASK} user=bob",
        ),
        ('{"password": "x"}', f'{{"password": "{MASK}"}}'),
        ("{'api_key': 'x'}", f"{{'api_key': '{MASK}'}}"),
        ("client-secret: abc123", f"client-secret: {MASK}"),
        (
            "postgresql://app:s3cret@db.example.com:5432/prod",
            f"postgresql://app:{MASK}@db.example.com:5432/prod",
        ),
        ("https://user:pa55@example.com/x", f"https://user:{MASK}@example.com/x"),
    ],
)
def test_secret_shapes_masked_in_text(redactor: Redactor, text: str, expected: str) -> None:
    """Each known secret shape in free text is replaced by the mask, the rest kept."""
    assert redactor.text(text) == expected


def test_literal_secret_masked() -> None:
    """A configured literal secret of any shape is masked wherever it appears."""
    literal = "plain-looking-value-42"
    red = Redactor(literals=[literal, None, "short"])
    assert red.text(f"a {literal} b {literal}") == f"a {MASK} b {MASK}"


def test_literal_longest_first() -> None:
    """When one literal contains another, the longer one is masked whole."""
    red = Redactor(literals=["abcdefgh", "abcdefgh-ijklmnop"])
    assert red.text("x abcdefgh-ijklmnop y") == f"x {MASK} y"


def test_short_literals_ignored() -> None:
    """Literals shorter than 8 characters are not masked (too likely to be ordinary words)."""
    assert Redactor(literals=["abc"]).text("abc abc") == "abc abc"


@pytest.mark.parametrize(
    "text",
    [
        "processed 42 rows in 1.3s",
        "max_tokens=512 token_count=5 tokens_used=77 model=gpt-4o",
        "fetched https://example.com:8443/path?page=2 ok",
        "email me at someone@example.com",
        "task-runner-1234567890abcdef finished",
        "the password policy changed",
        "",
    ],
)
def test_harmless_text_unchanged(redactor: Redactor, text: str) -> None:
    """Text with no secret shape is returned unchanged."""
    assert redactor.text(text) == text


def test_already_masked_value_not_masked_twice(redactor: Redactor) -> None:
    """Redacting twice is the same as redacting once."""
    once = redactor.text(f"password={JWT} Authorization: Bearer abcdefghijkl")
    assert redactor.text(once) == once


@pytest.mark.parametrize(
    "text",
    ["{'password': 'correct horse battery staple'}", 'password="hunter,two,three"'],
)
def test_quoted_secret_masked_whole(redactor: Redactor, text: str) -> None:
    """A quoted value after a secret key is masked up to its closing quote."""
    out = redactor.text(text)
    assert MASK in out
    for word in ("horse", "battery", "staple", "two", "three"):
        assert word not in out


# -- disabled -----------------------------------------------------------------------------
def test_disabled_redactor_returns_input() -> None:
    """A disabled redactor returns text and values as given (the same objects)."""
    red = Redactor(enabled=False, literals=["plain-looking-value-42"])
    text = f"password=hunter2 {JWT} plain-looking-value-42"
    meta: dict[str, Any] = {"password": "hunter2"}
    assert red.text(text) is text
    assert red.value(meta) is meta
