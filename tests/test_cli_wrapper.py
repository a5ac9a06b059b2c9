"""`supabase-log run`: unmodified programs and commands become one run each (real stack, real processes)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import abort_tree
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler.cli.wrapper import default_script_name, is_python_command
from supabase_log_handler.spool_files import pending_entries
from supabase_log_handler.triggers import detect_triggered_by

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13

SCRIPTS = Path(__file__).resolve().parent / "scripts"
SUPABASE_LOG = Path(sys.executable).parent / "supabase-log"


def _env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SUPABASE_", "GITHUB_")) and k not in ("CI", "DEBUG", "PYTHONPATH")
    }
    env.update(
        PYTHONPATH=str(SCRIPTS),
        SUPABASE_LOG_LOCAL_DB=str(tmp_path / "local.sqlite3"),
        SUPABASE_LOG_SPOOL=str(tmp_path / "spool"),
        SUPABASE_LOG_FLUSH_INTERVAL_S="0.2",
    )
    env.update(extra or {})
    return env


def wrap(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`supabase-log run ARGS` through the installed console script, in tmp_path."""
    return subprocess.run(
        [str(SUPABASE_LOG), "run", *args],
        env=_env(tmp_path, env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def one_run(db: Db, script: str) -> dict[str, Any]:
    rows = db.fetch(
        "select id::text, status, error_message, triggered_by, metadata, finished_at from runs where script_name = %s",
        (script,),
    )
    assert len(rows) == 1, rows
    return dict(
        zip(
            ("id", "status", "error_message", "triggered_by", "metadata", "finished_at"),
            rows[0],
            strict=True,
        )
    )


def logs_of(db: Db, run_id: str) -> list[dict[str, Any]]:
    rows = db.fetch(
        "select level, step, message, meta from logs where run_id = %s order by timestamp, id",
        (run_id,),
    )
    return [dict(zip(("level", "step", "message", "meta"), r, strict=True)) for r in rows]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


CRON_STYLE = """
    import logging
    import vendorlib

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("cron_job")
    log.debug("not stored at INFO")
    log.info("Found %d contacts", 150, extra={"meta": {"count": 150}, "step": "FETCH"})
    log.warning("rate limited", extra={"step": "FETCH", "retry_in": 2})
    vendorlib.fetch(2)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("division failed")
    log.error("upsert failed for %s", "call-1", extra={"step": "UPSERT"})
    raise RuntimeError("VAPI returned 502")
"""


def test_unmodified_script_with_uncaught_exception_is_one_error_run_with_every_record(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """A plain cron-style script run unchanged: one error run with the exception, each record a row with its level, step and extras."""
    script = unique("cron-job")
    write(tmp_path, "job.py", CRON_STYLE)
    out = wrap(tmp_path, ["--script-name", script, "--", sys.executable, "job.py"], supabase_env)
    assert out.returncode == 1, out.stderr
    assert (
        "INFO cron_job: Found 150 contacts" in out.stderr
    )  # the script's own console set-up still applies
    assert "RuntimeError: VAPI returned 502" in out.stderr
    run = one_run(db, script)
    assert run["status"] == "error" and run["finished_at"] is not None
    assert run["error_message"].startswith("exit code 1: RuntimeError: VAPI returned 502")
    assert "Traceback (most recent call last)" in run["error_message"]
    assert run["metadata"]["exit_code"] == 1 and run["metadata"]["wrapper"] == "python"
    rows = logs_of(db, run["id"])
    got = [(r["level"], r["step"], r["message"]) for r in rows]
    assert got == [
        ("INFO", "FETCH", "Found 150 contacts"),
        ("WARNING", "FETCH", "rate limited"),
        ("INFO", "LOG", "vendorlib fetched 2 items"),
        ("ERROR", "LOG", "division failed"),
        ("ERROR", "UPSERT", "upsert failed for call-1"),
        (
            "ERROR",
            "ERROR",
            "Uncaught exception in the main thread: RuntimeError: VAPI returned 502",
        ),
    ]
    assert rows[0]["meta"]["count"] == 150 and rows[1]["meta"]["retry_in"] == 2
    assert rows[2]["meta"]["log"]["logger"] == "vendorlib.client"
    assert rows[3]["meta"]["exception"]["type"] == "ZeroDivisionError"
    assert rows[0]["meta"]["log"]["file"].endswith("job.py") and rows[0]["meta"]["log"]["line"] == 8
    assert "VAPI returned 502" in rows[5]["meta"]["exception"]["traceback"]


def test_exit_code_decides_status_and_debug_rows_follow_the_level(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """sys.exit(3) is an error run with the code (wrapper exits 3); a clean `python -m` end is success, DEBUG rows only with DEBUG=true."""
    failing, clean = unique("exit3"), unique("clean")
    write(
        tmp_path,
        "exits.py",
        """
        import logging, sys
        logging.getLogger("exits").warning("about to exit")
        sys.exit(3)
    """,
    )
    out = wrap(tmp_path, ["-n", failing, "--", sys.executable, "exits.py"], supabase_env)
    assert out.returncode == 3, out.stderr
    run = one_run(db, failing)
    assert run["status"] == "error" and run["error_message"].startswith("exit code 3")
    assert [(r["message"], r["step"]) for r in logs_of(db, run["id"])] == [
        ("about to exit", "LOG"),
        ("exited with code 3", "ERROR"),  # so `supabase-log errors` shows why
    ]
    assert out.stderr.splitlines()[0] == "about to exit"  # printed as logging.lastResort would have

    write(
        tmp_path,
        "cleanjob.py",
        """
        import logging
        log = logging.getLogger("cleanjob")
        log.debug("debug detail")
        log.info("all good")
    """,
    )
    out = wrap(
        tmp_path,
        ["-n", clean, "--", sys.executable, "-m", "cleanjob"],
        {**supabase_env, "DEBUG": "true"},
    )
    assert out.returncode == 0, out.stderr
    run = one_run(db, clean)
    assert run["status"] == "success" and run["error_message"] is None
    assert [(r["level"], r["message"]) for r in logs_of(db, run["id"])] == [
        ("DEBUG", "debug detail"),
        ("INFO", "all good"),
    ]


def test_bash_command_output_lines_are_rows_and_still_echoed(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """A shell command's stdout lines are INFO rows, stderr WARNING/ERROR rows; output is echoed; its exit code is returned; GitHub Actions is detected."""
    script = unique("bash-job")
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKFLOW": "nightly",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/jobs",
        "GITHUB_RUN_ID": "42",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_SHA": "abc123",
    }
    command = 'echo "synced 3 rows"; echo "retrying page 2" >&2; echo "fatal error: disk full" >&2; echo done; exit 4'
    out = wrap(
        tmp_path, ["--script-name", script, "--", "bash", "-c", command], {**supabase_env, **github}
    )
    assert out.returncode == 4
    assert out.stdout == "synced 3 rows\ndone\n"
    assert "retrying page 2\nfatal error: disk full\n" in out.stderr
    run = one_run(db, script)
    assert run["status"] == "error"
    assert run["error_message"].startswith("exit code 4: fatal error: disk full")
    assert "retrying page 2" in run["error_message"]
    assert run["triggered_by"] == "github-actions"
    assert run["metadata"]["github"] == {
        "workflow": "nightly",
        "run_url": "https://github.com/acme/jobs/actions/runs/42",
        "ref": "refs/heads/main",
        "commit": "abc123",
    }
    rows = logs_of(db, run["id"])
    assert sorted((r["level"], r["message"], r["meta"]["stream"]) for r in rows) == sorted(
        [
            ("INFO", "synced 3 rows", "stdout"),
            ("INFO", "done", "stdout"),
            ("WARNING", "retrying page 2", "stderr"),
            ("ERROR", "fatal error: disk full", "stderr"),
        ]
    )


def test_the_handlers_own_notices_are_not_the_reason_a_run_failed(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """A delivery notice of the handler (in a child it attached to) after the command's last
    error line is echoed, but is neither a row nor the failed run's reason."""
    script = unique("notice-job")
    notice = "supabase-log-handler: cannot deliver to Supabase (network); keeping rows in the spool"
    command = f'echo "fatal error: disk full" >&2; echo "{notice}" >&2; exit 4'
    out = wrap(tmp_path, ["--script-name", script, "--", "bash", "-c", command], supabase_env)
    assert out.returncode == 4
    assert notice in out.stderr
    run = one_run(db, script)
    assert run["error_message"].startswith("exit code 4: fatal error: disk full")
    assert "cannot deliver" not in run["error_message"]
    assert [(r["level"], r["message"]) for r in logs_of(db, run["id"])] == [("ERROR", "fatal error: disk full")]


def test_python_child_processes_log_into_the_same_run(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """Python processes started by the wrapped script (directly and through a shell) log into the wrapper's run."""
    script = unique("parent-job")
    write(
        tmp_path,
        "parent.py",
        """
        import logging, subprocess, sys
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("parent").info("starting children")
        subprocess.run([sys.executable, "-c", "import logging; logging.getLogger('child').warning('from the child')"], check=True)
        subprocess.run(f"{sys.executable} -c \\"import logging; logging.getLogger('grandchild').error('through a shell')\\"", shell=True, check=True)
        logging.getLogger("parent").info("children done")
    """,
    )
    out = wrap(
        tmp_path, ["-n", script, "-t", "cron", "--", sys.executable, "parent.py"], supabase_env
    )
    assert out.returncode == 0, out.stderr
    run = one_run(db, script)
    assert run["status"] == "success" and run["triggered_by"] == "cron"
    rows = logs_of(db, run["id"])
    assert [(r["meta"]["log"]["logger"], r["message"]) for r in rows] == [
        ("parent", "starting children"),
        ("child", "from the child"),
        ("grandchild", "through a shell"),
        ("parent", "children done"),
    ]
    assert len({r["meta"]["log"]["process"] for r in rows}) == 3


def test_sigterm_is_forwarded_and_the_run_records_it(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """SIGTERM to the wrapper reaches the program, which delivers its rows; the run is an error and the exit code 128+15."""
    script = unique("sigterm-job")
    write(
        tmp_path,
        "waiter.py",
        """
        import logging, threading
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("waiter").info("waiting for SIGTERM")
        print("ready", flush=True)
        threading.Event().wait(60)
    """,
    )
    proc = subprocess.Popen(
        [str(SUPABASE_LOG), "run", "-n", script, "--", sys.executable, "waiter.py"],
        env=_env(tmp_path, {**supabase_env, "PYTHONFAULTHANDLER": "1"}),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in iter(proc.stdout.readline, "")], daemon=True
    ).start()  # type: ignore[union-attr]
    assert lines.get(timeout=60) == "ready\n"
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:  # say where each process is stuck (faulthandler)
        abort_tree(proc.pid)
        pytest.fail(f"the wrapper did not end; its stderr:\n{proc.communicate(timeout=30)[1]}")
    assert rc == 128 + signal.SIGTERM
    run = one_run(db, script)
    assert run["status"] == "error" and run["error_message"].startswith(
        "terminated by signal SIGTERM"
    )
    assert run["metadata"]["signal"] == "SIGTERM"
    rows = logs_of(db, run["id"])
    assert [(r["message"], r["meta"].get("stream")) for r in rows] == [
        ("waiting for SIGTERM", None),
        ("ready", "stdout"),  # its print()
    ]


def test_no_thread_of_the_wrapper_but_its_main_thread_can_take_a_signal(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """The kernel may hand a process-directed SIGTERM to any thread that does not block it;
    Python runs the handler only when the main thread wakes, so a signal landing on an
    output reader would never be forwarded while the wrapper waits for its command."""
    script = unique("mask-job")
    proc = subprocess.Popen(
        [str(SUPABASE_LOG), "run", "-n", script, "--", "bash", "-c",
         "echo ready; echo to stderr >&2; exec sleep 60"],
        env=_env(tmp_path, {**supabase_env, "PYTHONFAULTHANDLER": "1"}), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        others = [t for t in tasks if t != proc.pid]
        assert len(others) >= 2  # its stdout and stderr readers at least
        for tid in others:
            status = Path(f"/proc/{proc.pid}/task/{tid}/status").read_text()
            mask = int(next(ln.split()[1] for ln in status.splitlines()
                            if ln.startswith("SigBlk:")), 16)  # fmt: skip
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                assert mask >> (signum - 1) & 1, (tid, signum, status)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say where each process is stuck (faulthandler)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            abort_tree(proc.pid)
            pytest.fail(f"the wrapper did not end; {status}\nits stderr:\n"
                        f"{proc.communicate(timeout=30)[1]}")  # fmt: skip
    assert rc == 128 + signal.SIGTERM
    assert one_run(db, script)["metadata"]["signal"] == "SIGTERM"


def test_programs_own_logging_configuration_keeps_working(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """Module-level logging, basicConfig(force=True) and dictConfig with its own SupabaseHandler: same console output, each record stored once."""
    script = unique("config-job")
    write(
        tmp_path,
        "configured.py",
        """
        import logging, logging.config
        logging.info("before any configuration")
        logging.warning("module-level warning")
        logging.basicConfig(force=True, level=logging.WARNING, format="basic %(levelname)s %(message)s")
        logging.getLogger("app").info("info after basicConfig")
        logging.getLogger("app").error("error after basicConfig")
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"f": {"format": "dict %(levelname)s %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f", "level": "WARNING"},
                         "own": {"class": "supabase_log_handler.SupabaseHandler"}},
            "root": {"level": "INFO", "handlers": ["console", "own"]},
        })
        logging.getLogger("app").info("after dictConfig")
        logging.getLogger("app").warning("warned after dictConfig")
    """,
    )
    out = wrap(tmp_path, ["-n", script, "--", sys.executable, "configured.py"], supabase_env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        "WARNING:root:module-level warning",
        "basic ERROR error after basicConfig",
        "dict WARNING warned after dictConfig",
    ]
    run = one_run(db, script)
    rows = logs_of(db, run["id"])
    assert (rows[0]["meta"]["log"]["function"], rows[0]["meta"]["log"]["line"]) == (
        "<module>",
        3,
    )  # the caller, not the wrapper
    assert [(r["level"], r["message"]) for r in rows] == [
        ("INFO", "before any configuration"),
        ("WARNING", "module-level warning"),
        ("INFO", "info after basicConfig"),
        ("ERROR", "error after basicConfig"),
        ("INFO", "after dictConfig"),
        ("WARNING", "warned after dictConfig"),
    ]


def test_command_that_cannot_start_is_an_error_run_with_exit_127(tmp_path: Path) -> None:
    """A missing command gives exit code 127 and an error run naming it (here in the local store)."""
    out = wrap(tmp_path, ["-n", "missing-cmd", "--", "no-such-command-xyz"])
    assert out.returncode == 127
    assert "cannot start 'no-such-command-xyz'" in out.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "local.sqlite3") as conn:
        status, error = conn.execute(
            "select status, error_message from runs where script_name = 'missing-cmd'"
        ).fetchone()
    assert status == "error" and "no-such-command-xyz" in error


def test_command_kind_and_default_script_name() -> None:
    """Python commands are recognised (interpreter names, #! scripts) and the default script_name comes from the command."""
    assert is_python_command(["python3", "x.py"]) and is_python_command(
        [sys.executable, "-m", "pkg"]
    )
    assert not is_python_command(["bash", "-c", "true"])
    assert default_script_name(["python", "-u", "jobs/vapi_sync.py", "--full"], True) == "vapi_sync"
    assert default_script_name(["python3", "-X", "dev", "-m", "jobs.sync"], True) == "jobs.sync"
    assert default_script_name(["python", "-c", "pass"], True) == "python-c"
    assert default_script_name(["python3", "-c", "from jobs.sync import main; main()"], True) == (
        "jobs.sync"
    )
    assert default_script_name(["bash", "scripts/nightly.sh"], False) == "nightly"
    assert default_script_name(["./export-calls"], False) == "export-calls"


@pytest.mark.parametrize(
    ("env", "expected", "meta_keys"),
    [
        ({}, "manual", set()),
        ({"SUPABASE_LOG_TRIGGERED_BY": "cron"}, "cron", set()),
        ({"CI": "true"}, "ci", set()),
        ({"GITLAB_CI": "true"}, "gitlab-ci", set()),
        (
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_REPOSITORY": "a/b",
                "GITHUB_RUN_ID": "7",
                "GITHUB_SHA": "f00",
            },
            "github-actions",
            {"github"},
        ),
        ({"GITHUB_ACTIONS": "true", "SUPABASE_LOG_TRIGGERED_BY": "cron"}, "cron", {"github"}),
    ],
)
def test_triggered_by_detection(env: dict[str, str], expected: str, meta_keys: set[str]) -> None:
    """triggered_by: explicit (SUPABASE_LOG_TRIGGERED_BY), else GitHub Actions with its details, else another CI, else manual."""
    who, meta = detect_triggered_by(env)
    assert who == expected and set(meta) == meta_keys
    if "GITHUB_RUN_ID" in env:
        assert (
            meta["github"]["run_url"] == "https://github.com/a/b/actions/runs/7"
            and meta["github"]["commit"] == "f00"
        )


def test_bad_configuration_still_runs_the_command(tmp_path: Path, gateway: Gateway) -> None:
    """With the anon key the command still runs, its exit code is returned, and its run waits in the spool for the right key."""
    out = wrap(
        tmp_path,
        ["--", "bash", "-c", "echo still ran; exit 5"],
        {"SUPABASE_URL": gateway.url, "SUPABASE_SERVICE_ROLE_KEY": gateway.anon_key},
    )
    assert out.returncode == 5 and out.stdout == "still ran\n"
    said = [line for line in out.stderr.splitlines() if "anon key" in line]
    assert len(said) == 1 and "service role" in said[0] and "kept in the spool" in said[0]
    assert pending_entries(tmp_path / "spool")["runs"] >= 1


def test_secrets_on_the_command_line_are_not_stored(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """--password X, --token=X, -p X (declared), URL passwords and VAR=x assignments: no value reaches the runs row."""
    python_run, shell_run = unique("secret-args"), unique("secret-shell")
    write(tmp_path, "quiet.py", "import sys\n")
    secrets = [
        "hunter2",
        "tok_9f8e",
        "dbpw_77",
        "short_secret",
        "urlpw_55",
        "envpw_33",
        "mysqlpw_1",
    ]
    out = wrap(
        tmp_path,
        [
            *("-n", python_run, "--", sys.executable, "quiet.py"),
            *("--password", "hunter2", "--token=tok_9f8e", "--db-password", "dbpw_77"),
            *("-p", "short_secret", "--dsn", "postgresql://etl:urlpw_55@db.example.com/prod"),
            *("PGPASSWORD=envpw_33", "--max-tokens", "5"),
        ],
        {**supabase_env, "SUPABASE_LOG_REDACT_KEYS": "-p"},
    )
    assert out.returncode == 0, out.stderr
    script = "true mysql -umei -pmysqlpw_1 crm; PGPASSWORD='envpw_33' true psql 'postgresql://u:urlpw_55@h/db'"
    out = wrap(tmp_path, ["-n", shell_run, "--", "bash", "-c", script], supabase_env)
    assert out.returncode == 0, out.stderr
    stored = " ".join(
        db.fetchval("select row_to_json(runs)::text from runs where script_name = %s", (name,))
        for name in (python_run, shell_run)
    )
    assert not [s for s in secrets if s in stored], stored
    command = one_run(db, python_run)["metadata"]["command"]
    assert command.endswith(
        "quiet.py --password '[REDACTED]' '--token=[REDACTED]' --db-password '[REDACTED]' "
        "-p '[REDACTED]' --dsn 'postgresql://etl:[REDACTED]@db.example.com/prod' "
        "'PGPASSWORD=[REDACTED]' --max-tokens 5"
    ), command
    assert (
        "mysql -umei -p[REDACTED] crm; PGPASSWORD=[REDACTED] true psql"
        in (one_run(db, shell_run)["metadata"]["command"])
    )


PRINTER = """
    import sys, threading
    print("fetched 3 contacts")
    print("partial", end="")
    print(" line", flush=True)
    print("warning: slow page", file=sys.stderr)
    print("progress 10%", end="\\r")
    print("progress 100%")
    worker = threading.Thread(target=lambda: print("from a thread"))
    worker.start()
    worker.join()
    print("no newline at the end", end="")
    sys.exit("bye")
"""


def test_print_only_script_lines_are_stored_once(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """A wrapped script that only prints: each line one INFO row (meta.stream), console unchanged; --no-capture-print stores none."""
    script, quiet = unique("printer"), unique("printer-off")
    write(tmp_path, "printer.py", PRINTER)
    out = wrap(tmp_path, ["-n", script, "--", sys.executable, "printer.py"], supabase_env)
    assert out.returncode == 1, out.stderr
    assert out.stdout == (  # text mode reads the \r as \n
        "fetched 3 contacts\npartial line\nprogress 10%\nprogress 100%\nfrom a thread\n"
        "no newline at the end"
    )
    assert out.stderr.splitlines()[-2:] == ["warning: slow page", "bye"]
    rows = logs_of(db, one_run(db, script)["id"])
    printed = [
        (r["level"], r["message"], r["meta"]["stream"]) for r in rows if "stream" in r["meta"]
    ]
    assert printed == [
        ("INFO", "fetched 3 contacts", "stdout"),
        ("INFO", "partial line", "stdout"),
        ("INFO", "warning: slow page", "stderr"),
        ("INFO", "progress 100%", "stdout"),
        ("INFO", "from a thread", "stdout"),
        ("INFO", "no newline at the end", "stdout"),
    ]
    first = rows[0]["meta"]["log"]
    assert (first["logger"], first["line"]) == ("print", 3) and first["file"].endswith("printer.py")

    out = wrap(
        tmp_path,
        ["-n", quiet, "--no-capture-print", "--", sys.executable, "printer.py"],
        supabase_env,
    )
    assert out.returncode == 1 and out.stdout.startswith("fetched 3 contacts\n")
    assert not [r for r in logs_of(db, one_run(db, quiet)["id"]) if "stream" in r["meta"]]


def test_logging_to_stdout_and_print_are_not_duplicated(
    tmp_path: Path, db: Db, supabase_env: dict[str, str]
) -> None:
    """Logging that writes to stdout is stored as its record only; prints around it once each; a traceback is no print row."""
    script = unique("stdout-logging")
    write(
        tmp_path,
        "both.py",
        """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(message)s")
        log = logging.getLogger("app")
        print("started")
        log.info("loaded %d rows", 3)
        log.warning("one row skipped")
        print("done")
        raise ValueError("bad row")
    """,
    )
    out = wrap(tmp_path, ["-n", script, "--", sys.executable, "both.py"], supabase_env)
    assert out.returncode == 1
    assert out.stdout == "started\nLOG INFO loaded 3 rows\nLOG WARNING one row skipped\ndone\n"
    assert "ValueError: bad row" in out.stderr
    rows = logs_of(db, one_run(db, script)["id"])
    assert [(r["level"], r["message"], r["meta"]["log"]["logger"]) for r in rows] == [
        ("INFO", "started", "print"),
        ("INFO", "loaded 3 rows", "app"),
        ("WARNING", "one row skipped", "app"),
        ("INFO", "done", "print"),
        (
            "ERROR",
            "Uncaught exception in the main thread: ValueError: bad row",
            "supabase_log_handler.run",
        ),
    ]
