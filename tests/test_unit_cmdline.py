"""Unit tests of ``supabase_log_handler._cmdline``: which parts of a command line are secrets."""

from __future__ import annotations

import pytest

from supabase_log_handler._cmdline import mask_argv, secret_name
from supabase_log_handler._redact import Redactor

R = "[REDACTED]"
REDACTOR = Redactor(literals=["sb_secret_literal_value"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["python", "job.py", "--password", "hunter2", "--token", "tok", "--db-password", "x"],
            ["python", "job.py", "--password", R, "--token", R, "--db-password", R],
        ),
        (
            ["job", "--password=a", "--api-key=b", "--dbPassword=c", "-Dapp.secret=d"],
            ["job", f"--password={R}", f"--api-key={R}", f"--dbPassword={R}", f"-Dapp.secret={R}"],
        ),
        (["job", "-apikey", "k", "-token=t"], ["job", "-apikey", R, f"-token={R}"]),
        (
            ["job", "--max-tokens", "5", "--token-file", "t.txt", "--no-password", "db"],
            ["job", "--max-tokens", "5", "--token-file", "t.txt", "--no-password", "db"],
        ),
        (
            ["psql", "--password", "-h", "host", "-p", "5432"],
            ["psql", "--password", "-h", "host", "-p", "5432"],
        ),
        (["mysql", "-uroot", "-phunter2", "crm"], ["mysql", "-uroot", f"-p{R}", "crm"]),
        (["sshpass", "-p", "pw", "ssh", "host"], ["sshpass", "-p", R, "ssh", "host"]),
        (
            ["env", "PGPASSWORD=pw", "MYSQL_PWD=q", "HOME=/root", "psql"],
            ["env", f"PGPASSWORD={R}", f"MYSQL_PWD={R}", "HOME=/root", "psql"],
        ),
        (
            ["redis-cli", "-a", "pw", "redis://:pw2@h:6379"],
            ["redis-cli", "-a", R, f"redis://:{R}@h:6379"],
        ),
        (["job", "postgresql://etl:pw@db/x"], ["job", f"postgresql://etl:{R}@db/x"]),
        (["job", "https://example.com/a:b@c"], ["job", "https://example.com/a:b@c"]),
        (["job", "password=two words"], ["job", f"password={R}"]),
        (["job", "--key", "sb_secret_literal_value"], ["job", "--key", R]),
    ],
)
def test_mask_argv(argv: list[str], expected: list[str]) -> None:
    """Secret flag values, known short flags, assignments, URL passwords and literals are masked; the rest is kept."""
    assert mask_argv(argv, REDACTOR) == expected


def test_command_lines_inside_arguments_keep_their_text() -> None:
    """A `sh -c` script and an ssh remote command: secrets masked word by word, the rest as written."""
    script = "PGPASSWORD='a b' psql -h x && mysql -pQ db; curl -u me:pw https://u:p@x.io/?token=t | tee out"
    assert mask_argv(["bash", "-c", script], REDACTOR) == [
        "bash",
        "-c",
        f"PGPASSWORD={R} psql -h x && mysql -p{R} db; curl -u {R} https://u:{R}@x.io/?token={R} | tee out",
    ]
    assert mask_argv(["ssh", "host", "mysql --password='q q' -e 'select 1'"], REDACTOR) == [
        "ssh",
        "host",
        f"mysql --password={R} -e 'select 1'",
    ]
    assert mask_argv(["bash", "-c", 'echo "synced 3 rows"; exit 4'], REDACTOR)[2] == (
        'echo "synced 3 rows"; exit 4'
    )


def test_declared_flags_and_a_disabled_redactor() -> None:
    """Flags named by the caller (-p) are secret for every program; with redaction off nothing changes."""
    argv = ["python", "job.py", "-p", "pw", "-k", "kk", "-ppw2"]
    assert mask_argv(argv, REDACTOR) == argv
    assert mask_argv(argv, REDACTOR, flags=["-p", " -k ", "password"]) == [
        "python",
        "job.py",
        "-p",
        R,
        "-k",
        R,
        f"-p{R}",
    ]
    off = Redactor(enabled=False)
    assert mask_argv(["job", "--password", "pw"], off) == ["job", "--password", "pw"]


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("PGPASSWORD", True),
        ("db-password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("SUPABASE_SERVICE_ROLE_KEY", True),
        ("basic-auth", True),
        ("max_tokens", False),
        ("token_file", False),
        ("no-password", False),
        ("HOME", False),
        ("port", False),
    ],
)
def test_secret_name(name: str, secret: bool) -> None:
    """The Redactor's key rules, plus joined words, decide whether a name holds a secret."""
    assert secret_name(name, REDACTOR) is secret
