"""A hypothesis state machine drives handlers through random interleavings of logging (from one
thread and from several), flush, close (and logging after it), a new handler, fork, outages and
answers that come after the client gave up. The ledger's identity is checked after every step;
at the end of each example the spool is replayed and PostgreSQL must hold every record exactly
once, and every run a final status.

``SUPABASE_LOG_STATEFUL_EXAMPLES`` sets how many examples run (8 by default)."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
import warnings
from pathlib import Path

import pytest
from conftest import assert_identity
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from stack.fixtures import Db
from stack.gateway import Gateway

from supabase_log_handler import SupabaseHandler, context, start_run
from supabase_log_handler.cli.push import push_spool
from supabase_log_handler.config import load_settings
from supabase_log_handler.spool_files import pending_entries

EXAMPLES = int(os.environ.get("SUPABASE_LOG_STATEFUL_EXAMPLES", "8"))
CHILD_WAIT_S = 60.0


def _machine(gw: Gateway, db: Db, root: Path) -> type[RuleBasedStateMachine]:
    class Ledger(RuleBasedStateMachine):
        """One example: a script name of its own, a spool of its own, handlers one after another."""

        def __init__(self) -> None:
            super().__init__()
            context.reset()
            gw.clear_faults()
            gw.start()
            self.name = f"hyp-{uuid.uuid4().hex[:12]}"
            self.spool = root / self.name
            self.log = logging.getLogger(f"stateful.{self.name}")
            self.log.propagate = False
            self.log.setLevel(logging.DEBUG)
            self.handlers: list[SupabaseHandler] = []
            self.handler = self._new_handler()
            self.run = start_run(self.name).activate()  # current here, in threads and children
            self.sent = 0  # records this example emitted, in this process and its children
            self.up = True

        def _new_handler(self) -> SupabaseHandler:
            handler = SupabaseHandler(
                url=gw.url, key=gw.service_key, script_name=self.name,
                spool_path=str(self.spool), install_signal_handlers=False, capture_uncaught=False,
                flush_interval_s=0.05, request_timeout_s=0.3, retry_deadline_s=0.6,
                retry_max_wait_s=0.1, probe_interval_s=0.2, shutdown_timeout_s=2.0,
                heartbeat_interval_s=0.2,
            )  # fmt: skip
            self.log.addHandler(handler)
            self.handlers.append(handler)
            return handler

        def _emit(self, n: int, level: int, tag: str) -> None:
            for i in range(n):
                self.log.log(level, "%s %s %d", self.name, tag, i, extra={"meta": {"i": i}})

        # -- rules ---------------------------------------------------------------------
        @rule(n=st.integers(1, 60), level=st.sampled_from([logging.INFO, logging.WARNING, logging.ERROR]))
        def log_lines(self, n: int, level: int) -> None:
            tag = uuid.uuid4().hex[:8]
            self._emit(n, level, tag)
            self.sent += n

        @rule(threads=st.integers(2, 6), n=st.integers(1, 200))
        def log_from_threads(self, threads: int, n: int) -> None:
            workers = [threading.Thread(target=self._emit, args=(n, logging.INFO, uuid.uuid4().hex[:8]))
                       for _ in range(threads)]  # fmt: skip
            for w in workers:
                w.start()
            for w in workers:
                w.join(CHILD_WAIT_S)
                assert not w.is_alive()
            self.sent += threads * n

        @rule()
        def flush(self) -> None:
            if self.handler.flush(5.0):  # (a heartbeat may be made meanwhile: runs are not checked)
                assert self.handler.stats()["by_table"]["logs"]["in_memory"] == 0

        @rule()
        def close(self) -> None:
            self.handler.close(5.0)  # stays on the logger: later records meet a closed handler
            assert self.handler.stats()["in_memory"] == 0

        @rule()
        def new_handler(self) -> None:
            if self.handler.closed:
                self.log.removeHandler(self.handler)
                self.handler = self._new_handler()

        @rule()
        def outage(self) -> None:
            gw.stop()
            self.up = False

        @rule()
        def recovery(self) -> None:
            gw.start()
            self.up = True

        @rule(late=st.booleans())
        def answers(self, late: bool) -> None:
            gw.delay_response_s = 0.5 if late else 0.0  # 0.5 s: after the client's 0.3 s

        @rule(n=st.integers(1, 100))
        def fork(self, n: int) -> None:
            read, write = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the point
                pid = os.fork()
            if pid == 0:  # the child: log, close, report its ledger, and leave as pool workers do
                code = 1
                try:
                    os.close(read)
                    self._emit(n, logging.INFO, f"child-{os.getpid()}")
                    self.handler.close(5.0)
                    os.write(write, json.dumps(self.handler.stats()).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            with os.fdopen(read, "rb") as pipe:
                report = pipe.read()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            child = json.loads(report)
            assert_identity(child)
            assert child["in_memory"] == 0 and child["dropped_total"] == 0
            self.sent += n

        @invariant()
        def ledger_adds_up(self) -> None:
            for h in self.handlers:
                stats = h.stats()
                assert_identity(stats)
                assert stats["dropped_total"] == 0 and stats["dead_lettered"] == 0, json.dumps(stats)

        # -- the end of an example -------------------------------------------------------
        def teardown(self) -> None:
            gw.clear_faults()
            gw.start()
            self.run.finish()
            for h in self.handlers:
                h.close(10.0)
                self.log.removeHandler(h)
                assert_identity(h.stats())
            s = load_settings({"url": gw.url, "key": gw.service_key, "spool_path": str(self.spool)})
            _, left, error = push_spool(s)
            assert left == 0 and not pending_entries(self.spool), error
            stored = db.fetch(
                "select message, count(*) from logs where message like %s group by message",
                (f"{self.name} %",),
            )
            assert sum(n for _, n in stored) == self.sent and all(n == 1 for _, n in stored)
            assert db.fetch("select id, status from runs where script_name = %s", (self.name,)) == [
                (uuid.UUID(self.run.id), "success")
            ]

    return Ledger


@pytest.mark.process
def test_random_interleavings_keep_the_ledger_and_lose_nothing(
    gateway_faults: Gateway, db: Db, tmp_path: Path
) -> None:
    machine = _machine(gateway_faults, db, tmp_path)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES, stateful_step_count=10, deadline=None, derandomize=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )  # fmt: skip

