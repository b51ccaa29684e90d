"""The shared state of the provider runtime: in-process, in real Redis, and in files.

Every store keeps the same atomic semantics (the breaker, pauses and quotas rely on them); the
stores shared between processes keep them across processes too.
"""

import logging
import shutil
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fks_pipelines.providers.state import (
    DiskState,
    FallbackState,
    LocalState,
    RedisState,
    SharedState,
)
from fks_pipelines_tests.providers.support import CHILD_TIMEOUT_S, run_children

StateFactory = Callable[[], SharedState]


@pytest.fixture(params=["in-process", "redis", "files"])
def make_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateFactory]:
    """Builds states on one store: each call is another process's view of it, except
    in-process, where each call is a store of its own."""
    if request.param == "in-process":
        yield LocalState
    elif request.param == "redis":
        client: redis.Redis = request.getfixturevalue("redis_client")
        yield lambda: RedisState(client)
    else:
        yield lambda: DiskState(tmp_path / "state")


def expire(seconds: float) -> None:
    threading.Event().wait(seconds)


def test_a_missing_value_is_none(make_state: StateFactory) -> None:
    assert make_state().get_float("fks:v1:test:missing") is None


def test_raise_float_keeps_the_highest_value(make_state: StateFactory) -> None:
    state = make_state()
    assert state.raise_float("pause", 10.5, 60) == 10.5
    assert state.raise_float("pause", 3.0, 60) == 10.5
    assert state.raise_float("pause", 12.25, 60) == 12.25
    assert state.get_float("pause") == 12.25


def test_a_raised_float_expires(make_state: StateFactory) -> None:
    state = make_state()
    state.raise_float("pause", 10.0, 0.05)
    expire(0.1)
    assert state.get_float("pause") is None
    assert state.raise_float("pause", 1.0, 60) == 1.0


def test_incr_counts_and_gives_the_new_value(make_state: StateFactory) -> None:
    state = make_state()
    assert state.incr("calls", 3, 60) == 3
    assert state.incr("calls", 2, 60) == 5
    assert state.incr("calls", -4, 60) == 1
    assert state.get_float("calls") == 1.0


def test_a_counter_expires_from_its_creation_not_its_last_increment(
    make_state: StateFactory,
) -> None:
    state = make_state()
    state.incr("calls", 1, 0.2)
    expire(0.1)
    state.incr("calls", 1, 60)  # a later ttl does not extend the counter's life
    expire(0.15)
    assert state.get_float("calls") is None
    assert state.incr("calls", 1, 60) == 1


def test_add_creates_a_flag_once_until_it_expires(make_state: StateFactory) -> None:
    state = make_state()
    assert state.add("probe", 0.05)
    assert not state.add("probe", 0.05)
    expire(0.1)
    assert state.add("probe", 60)


def test_delete_removes_every_name_given(make_state: StateFactory) -> None:
    state = make_state()
    state.incr("failures", 2, 60)
    state.raise_float("open_until", 5.0, 60)
    state.add("probe", 60)
    state.delete("failures", "open_until", "probe", "never-set")
    assert state.get_float("failures") is None
    assert state.get_float("open_until") is None
    assert state.add("probe", 60)


def test_threads_of_one_process_count_every_increment(make_state: StateFactory) -> None:
    state = make_state()
    start = threading.Barrier(4)

    def count() -> None:
        start.wait(timeout=10)
        for _ in range(50):
            state.incr("calls", 1, 60)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert state.get_float("calls") == 200


def hammer(barrier: Any, queue: Any, directory: Path, increments: int) -> None:
    """Child: after the barrier, increment a counter, try to create a flag and raise a float
    on the files in ``directory``; puts whether this process created the flag."""
    try:
        state = DiskState(directory)
        barrier.wait(timeout=CHILD_TIMEOUT_S)
        created = state.add("probe", 60)
        for value in range(increments):
            state.incr("calls", 1, 60)
            state.raise_float("pause", float(value), 60)
        queue.put({"created": created})
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def test_files_are_atomic_across_processes(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    results = run_children(hammer, [(directory, 100) for _ in range(3)])

    assert sorted(r["created"] for r in results) == [False, False, True]
    state = DiskState(directory)
    assert state.get_float("calls") == 300
    assert state.get_float("pause") == 99.0


def test_files_that_fail_mid_run_degrade_to_this_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The state directory is replaced by a file while the run goes on: a thread that opens the
    files now gets SQLite's error, is served in-process instead, and a warning is logged once."""
    directory = tmp_path / "state"
    state = FallbackState(DiskState(directory), LocalState())
    assert state.incr("calls", 1, 60) == 1
    shutil.rmtree(directory)
    directory.write_text("not a directory")

    seen: list[int] = []  # in-process counting starts afresh

    def count_twice() -> None:
        seen.extend(state.incr("calls", 1, 60) for _ in range(2))

    with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.state"):
        later = threading.Thread(target=count_twice)
        later.start()
        later.join(timeout=10)

    assert seen == [1, 2]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "shared state files unavailable, provider state kept in-process" in warning.getMessage()
