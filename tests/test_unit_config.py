"""Unit tests of ``supabase_log_handler.config``: sources, precedence, parsing and validation."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from supabase_log_handler.config import (
    FIELDS,
    default_script_name,
    key_role,
    load_settings,
    read_env_file,
)
from supabase_log_handler.errors import ConfigurationError

URL = "https://abcdefghijklmnop.supabase.co"


def make_jwt(claims: Any) -> str:
    """An unsigned-looking JWT with the given payload (only the payload is ever read)."""

    def part(data: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


SERVICE_JWT = make_jwt({"iss": "supabase", "role": "service_role", "ref": "abcdefghijklmnop"})
ANON_JWT = make_jwt({"iss": "supabase", "role": "anon", "ref": "abcdefghijklmnop"})
AUTHED_JWT = make_jwt({"role": "authenticated"})
SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
SB_PUBLISHABLE = "sb_publishable_ZZ9fake0PubKey_1234567890ab"


@pytest.fixture
def no_env_file(tmp_path: Path) -> Path:
    """A .env path that does not exist (so the real working directory's .env is never read)."""
    return tmp_path / "missing.env"


def load(
    explicit: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None, env_file: Path
) -> Any:
    return load_settings(explicit, environ=environ or {}, env_file=env_file)


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.env"
    path.write_text(text)
    return path


# -- precedence ---------------------------------------------------------------------------
def test_defaults_when_nothing_is_set(no_env_file: Path) -> None:
    """With no keyword, env var or .env value, every field has its table default."""
    s = load(env_file=no_env_file)
    for name, spec in FIELDS.items():
        assert getattr(s, name) == spec.default, name
    assert not s.uses_supabase


def test_explicit_beats_env_beats_dotenv(tmp_path: Path) -> None:
    """A keyword wins over the environment, which wins over .env, which wins over the default."""
    env_file = write_env(
        tmp_path,
        "SUPABASE_LOG_DEFAULT_STEP=from-dotenv\n"
        "SUPABASE_LOG_SCHEMA=dotenv_schema\n"
        "SUPABASE_LOG_RUNS_TABLE=dotenv_runs\n",
    )
    environ = {"SUPABASE_LOG_DEFAULT_STEP": "from-env", "SUPABASE_LOG_SCHEMA": "env_schema"}
    s = load({"default_step": "explicit"}, environ=environ, env_file=env_file)
    assert s.default_step == "explicit"  # explicit > env > .env
    assert s.schema == "env_schema"  # env > .env
    assert s.runs_table == "dotenv_runs"  # .env > default
    assert s.logs_table == "logs"  # default


def test_explicit_none_falls_through_to_env(no_env_file: Path) -> None:
    """An explicit None counts as not given: the environment value is used."""
    s = load(
        {"default_step": None}, environ={"SUPABASE_LOG_DEFAULT_STEP": "env"}, env_file=no_env_file
    )
    assert s.default_step == "env"


def test_os_environ_used_by_default(monkeypatch: pytest.MonkeyPatch, no_env_file: Path) -> None:
    """Without environ=, the process environment is read."""
    monkeypatch.setenv("SUPABASE_LOG_DEFAULT_STEP", "from-os")
    assert load_settings(env_file=no_env_file).default_step == "from-os"


def test_dotenv_not_copied_into_os_environ(tmp_path: Path) -> None:
    """Reading .env does not put its values into os.environ."""
    env_file = write_env(tmp_path, "SUPABASE_LOG_DEFAULT_STEP=dotenv-only\n")
    s = load_settings(environ={}, env_file=env_file)
    assert s.default_step == "dotenv-only"
    assert "SUPABASE_LOG_DEFAULT_STEP" not in os.environ


def test_read_env_file_missing_is_empty(no_env_file: Path) -> None:
    """A .env path that does not exist yields no values."""
    assert read_env_file(no_env_file) == {}


def test_read_env_file_parses_quotes_and_comments(tmp_path: Path) -> None:
    """The .env reader handles comments, quotes and export prefixes."""
    env_file = write_env(tmp_path, '# comment\nexport A="quoted value"\nB=plain # trailing\n')
    assert read_env_file(env_file) == {"A": "quoted value", "B": "plain"}


def test_blank_text_means_default(no_env_file: Path) -> None:
    """A blank text value counts as unset and gives the default."""
    s = load({"default_step": "   "}, env_file=no_env_file)
    assert s.default_step == "LOG"


def test_text_values_are_stripped(no_env_file: Path) -> None:
    """Text values lose surrounding whitespace."""
    assert load({"default_step": "  load  "}, env_file=no_env_file).default_step == "load"


# -- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" On ", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_bool_parsing_from_env(raw: str, expected: bool, no_env_file: Path) -> None:
    """Boolean env values accept 1/true/yes/on and 0/false/no/off (any case)."""
    s = load(environ={"SUPABASE_LOG_REDACT": raw}, env_file=no_env_file)
    assert s.redact is expected


def test_empty_env_value_means_unset(no_env_file: Path) -> None:
    """An empty variable (``SUPABASE_LOG_REDACT=``) leaves the default in place, never turning safety off."""
    s = load(
        environ={"SUPABASE_LOG_REDACT": "", "SUPABASE_LOG_MAX_QUEUE_ROWS": " "},
        env_file=no_env_file,
    )
    assert s.redact is True
    assert s.max_queue_rows == FIELDS["max_queue_rows"].default


def test_empty_env_value_hides_the_env_file(tmp_path: Path) -> None:
    """``SUPABASE_URL=`` in the environment means "not set" even when .env sets the URL: the local store."""
    env_file = write_env(
        tmp_path,
        "SUPABASE_URL=https://abc.supabase.co\nSUPABASE_SERVICE_ROLE_KEY=sb_secret_x\nSUPABASE_LOG_REDACT=false\n",
    )
    from_file = load(environ={}, env_file=env_file)
    assert from_file.uses_supabase and from_file.redact is False
    s = load(environ={"SUPABASE_URL": "", "SUPABASE_LOG_REDACT": " "}, env_file=env_file)
    assert s.url is None and not s.uses_supabase and s.destination.startswith("local:")
    assert s.redact is True and s.key == "sb_secret_x"


def test_bool_explicit_python_bool(no_env_file: Path) -> None:
    """A Python bool keyword is taken as is."""
    assert load({"redact": False}, env_file=no_env_file).redact is False


def test_int_parsing(no_env_file: Path) -> None:
    """Integer settings parse from text and keep int type."""
    s = load(environ={"SUPABASE_LOG_MAX_BATCH_ROWS": " 250 "}, env_file=no_env_file)
    assert s.max_batch_rows == 250
    assert type(s.max_batch_rows) is int


def test_float_parsing(no_env_file: Path) -> None:
    """Float settings parse from text."""
    s = load(environ={"SUPABASE_LOG_FLUSH_INTERVAL_S": "0.25"}, env_file=no_env_file)
    assert s.flush_interval_s == 0.25


def test_choice_parsing_is_case_insensitive(no_env_file: Path) -> None:
    """Choice settings accept any case and are stored lowercase."""
    s = load(
        environ={"SUPABASE_LOG_OVERFLOW": "BLOCK", "SUPABASE_LOG_DURABILITY": " Disk "},
        env_file=no_env_file,
    )
    assert (s.overflow, s.durability) == ("block", "disk")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("redact", "maybe"),
        ("spool", "2"),
        ("max_batch_rows", "many"),
        ("max_batch_rows", "4.5"),
        ("max_batch_rows", "0"),
        ("max_batch_rows", "-3"),
        ("max_batch_rows", "20000"),
        ("flush_interval_s", "soon"),
        ("flush_interval_s", "0"),
        ("flush_interval_s", "-1.5"),
        ("flush_interval_s", "nan"),
        ("flush_interval_s", "inf"),
        ("overflow", "explode"),
        ("sink", "s3"),
        ("durability", "tape"),
        ("schema", "bad-schema"),
        ("runs_table", "runs; drop table logs"),
        ("logs_table", "1logs"),
    ],
)
def test_malformed_env_value_names_keyword_and_env_var(
    name: str, raw: str, no_env_file: Path
) -> None:
    """A malformed env value raises ConfigurationError naming both the keyword and the env var."""
    with pytest.raises(ConfigurationError) as info:
        load(environ={FIELDS[name].env: raw}, env_file=no_env_file)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert name in message
    assert FIELDS[name].env in message


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("max_batch_rows", True),
        ("flush_interval_s", [1]),
        ("default_step", 5),
        ("redact", "sometimes"),
    ],
)
def test_malformed_explicit_value_names_keyword_and_env_var(
    name: str, raw: Any, no_env_file: Path
) -> None:
    """A malformed keyword value raises ConfigurationError naming the keyword and the env var."""
    with pytest.raises(ConfigurationError) as info:
        load({name: raw}, env_file=no_env_file)
    assert name in str(info.value)
    assert FIELDS[name].env in str(info.value)


def test_malformed_dotenv_value_rejected(tmp_path: Path) -> None:
    """A malformed value coming from .env is rejected like one from the environment."""
    env_file = write_env(tmp_path, "SUPABASE_LOG_MAX_BATCH_BYTES=lots\n")
    with pytest.raises(ConfigurationError, match="SUPABASE_LOG_MAX_BATCH_BYTES"):
        load_settings(environ={}, env_file=env_file)


def test_fractional_explicit_value_for_int_setting_rejected(no_env_file: Path) -> None:
    """A fractional keyword value for a whole-number setting is rejected, not truncated."""
    with pytest.raises(ConfigurationError, match="max_batch_rows"):
        load({"max_batch_rows": 4.5}, env_file=no_env_file)


def test_unknown_keyword_rejected(no_env_file: Path) -> None:
    """An unknown keyword raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match="flush_interval"):
        load({"flush_interval": 1.0}, env_file=no_env_file)


# -- Supabase URL and key -----------------------------------------------------------------
@pytest.mark.parametrize(
    "url", [URL, URL + "/", "http://127.0.0.1:54321", "https://example.com/supabase/base"]
)
def test_valid_urls_accepted(url: str, no_env_file: Path) -> None:
    """http(s) URLs with a host (and optionally a path) are accepted and select Supabase."""
    s = load({"url": url, "key": SB_SECRET}, env_file=no_env_file)
    assert s.url == url
    assert s.uses_supabase


@pytest.mark.parametrize(
    "url",
    [
        "abcdefghijklmnop.supabase.co",
        "ftp://example.com",
        "https://",
        "https://host name.co",
        URL + "?x=1",
        URL + "#frag",
    ],
)
def test_invalid_url_rejected(url: str, no_env_file: Path) -> None:
    """A URL that is not plain http(s)://host[/path] raises, naming url and SUPABASE_URL."""
    with pytest.raises(ConfigurationError) as info:
        load({"url": url, "key": SB_SECRET}, env_file=no_env_file)
    assert "url" in str(info.value) and "SUPABASE_URL" in str(info.value)


def test_invalid_url_ignored_for_local_sink(no_env_file: Path) -> None:
    """With sink=local the URL is not used, so it is not validated."""
    s = load({"url": "not a url", "sink": "local"}, env_file=no_env_file)
    assert not s.uses_supabase


def test_missing_key_with_url_set(no_env_file: Path) -> None:
    """A URL without a key raises, naming the key setting and its env var."""
    with pytest.raises(ConfigurationError) as info:
        load(environ={"SUPABASE_URL": URL}, env_file=no_env_file)
    message = str(info.value)
    assert "key" in message and "SUPABASE_SERVICE_ROLE_KEY" in message
    assert "service role" in message


def test_sink_supabase_requires_url(no_env_file: Path) -> None:
    """sink=supabase without a URL raises, naming url and SUPABASE_URL."""
    with pytest.raises(ConfigurationError, match="SUPABASE_URL"):
        load({"sink": "supabase"}, env_file=no_env_file)


@pytest.mark.parametrize("key", [ANON_JWT, AUTHED_JWT, SB_PUBLISHABLE])
def test_public_keys_rejected_without_leaking(key: str, no_env_file: Path) -> None:
    """anon/authenticated JWTs and sb_publishable_ keys are refused, pointing to the service role key."""
    with pytest.raises(ConfigurationError) as info:
        load({"url": URL, "key": key}, env_file=no_env_file)
    message = str(info.value)
    assert "service role" in message
    assert "SUPABASE_SERVICE_ROLE_KEY" in message
    assert key not in message
    assert key not in repr(info.value)


@pytest.mark.parametrize("key", [SERVICE_JWT, SB_SECRET])
def test_service_keys_accepted(key: str, no_env_file: Path) -> None:
    """Service role JWTs and sb_secret_ keys are accepted."""
    assert load({"url": URL, "key": key}, env_file=no_env_file).key == key


@pytest.mark.parametrize(
    "explicit",
    [
        {"url": URL, "key": SB_SECRET, "max_batch_rows": "x"},
        {"url": URL, "key": SB_SECRET, "schema": "no-good"},
        {"url": "ftp://nope", "key": SB_SECRET},
        {"url": URL, "key": SB_PUBLISHABLE},
    ],
)
def test_key_never_in_error_messages(explicit: dict[str, Any], no_env_file: Path) -> None:
    """Whatever setting is wrong, the key's value does not appear in the error."""
    with pytest.raises(ConfigurationError) as info:
        load(explicit, env_file=no_env_file)
    assert explicit["key"] not in str(info.value)


def test_swapped_url_and_key_do_not_leak_the_key(no_env_file: Path) -> None:
    """A key given as the URL by mistake is not echoed in the error message."""
    with pytest.raises(ConfigurationError) as info:
        load({"url": SERVICE_JWT, "key": URL}, env_file=no_env_file)
    assert SERVICE_JWT not in str(info.value)


def test_public_dict_hides_key(no_env_file: Path) -> None:
    """public_dict shows *** instead of the key."""
    s = load({"url": URL, "key": SB_SECRET}, env_file=no_env_file)
    data = s.public_dict()
    assert data["key"] == "***"
    assert SB_SECRET not in json.dumps(data)


@pytest.mark.parametrize(
    ("key", "role"),
    [
        (SERVICE_JWT, "service_role"),
        (ANON_JWT, "anon"),
        (AUTHED_JWT, "authenticated"),
        (SB_SECRET, "service_role"),
        (SB_PUBLISHABLE, "anon"),
        ("garbage", None),
        ("a.b.c", None),
        ("", None),
        (make_jwt({"sub": "no role"}), None),
        (make_jwt(["role", "anon"]), None),
        (make_jwt({"role": 5}), None),
        ("eyJ.!!!.x", None),
        ("x." + base64.urlsafe_b64encode(b"\xff\xfe{").decode() + ".y", None),
    ],
)
def test_key_role(key: str, role: str | None) -> None:
    """key_role reads the role from JWT claims or the sb_ prefix, and None for anything else."""
    assert key_role(key) == role


# -- script name --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/srv/jobs/sync.py", "--full"], "sync"),
        (["nightly_export.py"], "nightly_export"),
        (["/srv/jobs/mypkg/__main__.py"], "mypkg"),
        (["/usr/local/bin/job-runner"], "job-runner"),
        (["-m"], "python"),
        (["-"], "python"),
        ([""], "python"),
        ([], "python"),
    ],
)
def test_default_script_name(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: str
) -> None:
    """The script name comes from sys.argv[0]: file stem, package of __main__.py, or "python"."""
    monkeypatch.setattr(sys, "argv", argv)
    assert default_script_name() == expected


@pytest.mark.parametrize(
    ("orig_argv", "expected"),
    [
        (["python", "-c", "from jobs.sync import main; main()"], "jobs.sync"),
        (
            ["python3", "-W", "ignore", "-c", "import os, hubspot_sync.run as r; r.go()"],
            "hubspot_sync.run",
        ),
        (["python", "-cimport vapi_sync"], "vapi_sync"),
        (["python", "-c", "import logging; logging.warning('x')"], "python-c"),
        (["python", "-c", "import supabase_log_handler; print(1)"], "python-c"),
        (["python", "-c", "this is not python"], "python-c"),
        (["python", "-c"], "python-c"),
    ],
)
def test_default_script_name_of_python_c(
    monkeypatch: pytest.MonkeyPatch, orig_argv: list[str], expected: str
) -> None:
    """``python -c CODE`` runs are named after the first non-stdlib module CODE imports, else ``python-c``."""
    monkeypatch.setattr(sys, "argv", ["-c"])
    monkeypatch.setattr(sys, "orig_argv", orig_argv, raising=False)
    assert default_script_name() == expected
