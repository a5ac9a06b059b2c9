"""Unit tests of ``supabase_log_handler._ids``: time-ordered UUIDv7 made on the client."""

from __future__ import annotations

import itertools
import os
import select
import threading
import time
import uuid

import pytest

from supabase_log_handler._ids import new_id, uuid7

pytestmark = pytest.mark.process  # forks, signals or exits: also run on 3.10 and 3.13

PIPE_DEADLINE_S = 10.0


def _read_all(fd: int, deadline_s: float, kill_pid: int | None = None) -> bytes:
    """Everything written to ``fd`` until EOF, failing the test (and killing the child) after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if kill_pid is not None:
                os.kill(kill_pid, 9)
                os.waitpid(kill_pid, 0)
            pytest.fail("child process did not finish writing in time")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _reap(pid: int, deadline_s: float = PIPE_DEADLINE_S) -> int:
    """Wait for a forked child and return its exit code, killing it after the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        threading.Event().wait(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("child process did not exit in time")


def test_version_and_variant_bits() -> None:
    """Ids carry version 7 and the RFC 4122 variant."""
    for _ in range(1000):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_new_id_is_canonical_string() -> None:
    """new_id returns the canonical lowercase hyphenated form of a UUIDv7."""
    text = new_id()
    assert str(uuid.UUID(text)) == text
    assert uuid.UUID(text).version == 7


def test_time_prefix_is_now() -> None:
    """The 48-bit prefix is the Unix time in milliseconds at creation."""
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    ms = value.int >> 80
    # The counter may borrow a millisecond or two when ids are made very fast.
    assert before <= ms <= after + 5


def test_strictly_increasing_in_one_thread() -> None:
    """100k ids made one after another in one thread are strictly increasing."""
    ids = [uuid7() for _ in range(100_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)


def test_string_order_matches_creation_order() -> None:
    """The canonical strings sort in creation order, as the database sorts them."""
    ids = [new_id() for _ in range(10_000)]
    assert sorted(ids) == ids


def test_unique_and_ordered_per_thread_across_threads() -> None:
    """Ids made concurrently by 8 threads are all unique and increasing within each thread."""
    per_thread: list[list[uuid.UUID]] = [[] for _ in range(8)]
    start = threading.Barrier(len(per_thread))

    def work(out: list[uuid.UUID]) -> None:
        start.wait(timeout=10)
        for _ in range(10_000):
            out.append(uuid7())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything) == 80_000
    for out in per_thread:
        assert out == sorted(out)


def test_process_wide_order_across_threads() -> None:
    """Across threads, an id made later (in a total order of calls) sorts after every earlier one."""
    order_lock = threading.Lock()
    made: list[uuid.UUID] = []
    start = threading.Barrier(6)

    def work() -> None:
        start.wait(timeout=10)
        for _ in range(5_000):
            with order_lock:  # makes the call order observable; uuid7 takes its own lock inside
                made.append(uuid7())

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert len(made) == 30_000
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_forked_child_ids_differ_from_parent() -> None:
    """A forked child (same counter state) makes ids that the parent never makes."""
    uuid7()  # make sure the parent's generator state is warm before forking
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            payload = "\n".join(new_id() for _ in range(2000)).encode()
            os.write(write_fd, payload)
            os.close(write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    parent_ids = {new_id() for _ in range(2000)}
    try:
        child_ids = set(_read_all(read_fd, PIPE_DEADLINE_S).decode().split("\n"))
    finally:
        os.close(read_fd)
    assert _reap(pid) == 0
    assert len(child_ids) == 2000
    assert all(uuid.UUID(i).version == 7 for i in child_ids)
    assert not child_ids & parent_ids


def test_ids_made_inside_a_signal_handler_interrupting_id_making() -> None:
    """A signal handler that makes ids while the interrupted thread is making ids never waits and never repeats one."""
    import signal

    made_in_handler: list[str] = []

    def on_alarm(signum: int, frame: object) -> None:
        made_in_handler.append(new_id())

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        made = [new_id() for _ in range(200_000)]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert made_in_handler, "the timer never fired"
    everything = made + made_in_handler
    assert len(set(everything)) == len(everything)
    assert made == sorted(made)
