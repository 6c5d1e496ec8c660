"""The writer thread on real files: batching, outages and recovery, drops, retention, schema."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from storage_timeline import DAY, HOUR, NOW, check

from healthcheck.errors import StorageError
from healthcheck.result import Status
from storage.rollup import Tally, bucket_of
from storage.schema import BUCKET_COLUMNS, LATENCY_BOUNDS_MS, ROLLUP_TABLES, SCHEMA_VERSION, connect
from storage.uptime import StorageReader
from storage.writer import Backoff, Retention, StorageWriter, prune, write_batch

# Retries every 10 ms, not every 0.5 s: the same outage, recovery and exit, without the wait.
QUICK = Backoff(first=0.01, most=0.2, at_exit=0.08)


def count(path: str, table: str = "results") -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_results_waiting_for_the_next_batch_count_in_the_queue_depth(db_path) -> None:
    """Taken off the queue into a batch that waits for its flush, results are still unwritten:
    healthcheck_storage_queue_depth must not read 0 meanwhile."""
    writer = StorageWriter(db_path, batch_size=1000, flush_interval=3.0, clock=lambda: NOW)
    for i in range(5):  # queued before it starts: it takes all five with the first
        assert writer.submit(*check(NOW - 100 + i))
    writer.start()
    wait_for(lambda: writer._queue.empty())  # all taken into the batch being collected
    assert writer.queue_depth == 5 and writer.stats.written == 0
    writer.close()
    assert writer.queue_depth == 0 and count(db_path) == 5


def test_a_full_batch_is_written_without_waiting_for_the_flush_interval(db_path) -> None:
    """The writer sleeps while a batch fills (for up to flush_interval, 300 s here): the
    result that fills it wakes the writer."""
    writer = StorageWriter(db_path, batch_size=3, flush_interval=300.0, clock=lambda: NOW)
    writer.start()
    try:
        assert writer.submit(*check(NOW - 100))
        wait_for(lambda: writer._queue.empty())  # taken: the writer now sleeps on its batch
        assert writer.submit(*check(NOW - 99))
        assert writer.submit(*check(NOW - 98))
        wait_for(lambda: writer.stats.written == 3, timeout=60.0)
    finally:
        writer.close()
    assert count(db_path) == 3


def test_submit_then_close_writes_everything_with_mode_0600(db_path) -> None:
    writer = StorageWriter(db_path, batch_size=50, flush_interval=0.05, clock=lambda: NOW)
    writer.start()
    for i in range(333):
        assert writer.submit(*check(NOW - 1000 + i, ok=i % 3 != 0))
    writer.close()
    assert count(db_path) == 333
    assert writer.stats.written == 333 and writer.stats.dropped == 0
    assert os.stat(db_path).st_mode & 0o777 == 0o600
    reader = StorageReader(db_path)
    tally = reader.window(NOW - HOUR, NOW)[1]
    reader.close()
    assert (tally.checks, tally.successes) == (333, 222)


def test_restart_continues_the_same_uptime(db_path) -> None:
    for start in (0, 100):
        writer = StorageWriter(db_path, flush_interval=0.05, clock=lambda: NOW)
        writer.start()
        for i in range(100):
            writer.submit(*check(NOW - 3000 + start + i, ok=start == 0))
        writer.close()
    reader = StorageReader(db_path)
    tally = reader.window(NOW - HOUR, NOW)[1]
    reader.close()
    assert (tally.checks, tally.successes) == (200, 100)


def test_a_reader_sees_consistent_data_while_the_writer_commits(db_path) -> None:
    writer = StorageWriter(db_path, batch_size=20, flush_interval=0.01, clock=lambda: NOW)
    writer.start()
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            writer.submit(*check(NOW - 3000 + i % 2000))
            i += 1
            if i % 200 == 0:
                time.sleep(0.005)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_for(lambda: writer.stats.written > 0)
    reader = StorageReader(db_path)
    seen = []
    deadline = time.monotonic() + 20
    try:
        while len(seen) < 50 or len(set(seen)) < 3:
            assert time.monotonic() < deadline, f"no progress seen by the reader: {seen[-5:]}"
            raw = reader.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            rolled = reader.window(NOW - DAY, NOW)[1].checks
            seen.append(rolled)
            assert rolled >= raw  # rollups commit with their rows: never behind
            time.sleep(0.002)
    finally:
        stop.set()
        producer.join()
        writer.close()
        reader.close()
    assert seen == sorted(seen) and seen[-1] > seen[0]


def test_outage_keeps_results_and_catches_up(tmp_path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the database directory should be")
    path = str(blocker / "healthcheck.db")
    writer = StorageWriter(path, flush_interval=0.05, clock=lambda: NOW, backoff=QUICK)
    writer.start()
    for i in range(40):
        writer.submit(*check(NOW - 100 + i))
    wait_for(lambda: writer.stats.failures >= 1)
    assert not writer.stats.writable and writer.stats.last_error
    assert writer.stats.written == 0
    assert writer.queue_depth == 40  # the batch in the writer's hands is still waiting
    blocker.unlink()  # the disk comes back
    wait_for(lambda: writer.stats.written == 40)
    assert writer.stats.writable and writer.stats.last_error is None
    assert writer.queue_depth == 0
    writer.close()
    assert count(path) == 40


def test_a_full_queue_drops_and_counts(tmp_path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    writer = StorageWriter(
        str(blocker / "db"),
        max_queue=100,
        batch_size=10,
        flush_interval=0.01,
        clock=lambda: NOW,
        backoff=QUICK,
    )
    writer.start()
    accepted = sum(writer.submit(*check(NOW + i)) for i in range(300))
    assert writer.stats.dropped == 300 - accepted
    assert 100 <= accepted <= 110  # the queue bound, plus the batch the thread holds
    blocker.unlink()
    wait_for(lambda: writer.stats.written == accepted)
    writer.close()


def test_a_locked_database_is_retried_not_lost(db_path) -> None:
    connect(db_path).conn.close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    writer = StorageWriter(
        db_path, flush_interval=0.05, clock=lambda: NOW, backoff=QUICK, busy_timeout=0.1
    )
    writer.start()
    writer.submit(*check(NOW))
    wait_for(lambda: writer.stats.failures >= 1, timeout=20)
    holder.execute("COMMIT")
    holder.close()
    wait_for(lambda: writer.stats.written == 1, timeout=20)
    writer.close()
    assert count(db_path) == 1


def test_retention_prunes_raw_rows_but_keeps_rollups(store, db_path) -> None:
    store(*(check(NOW - 5 * DAY + i * 60) for i in range(30)))  # old: past 48h raw retention
    store(*(check(NOW - HOUR + i * 60, ok=False) for i in range(30)))  # recent
    db = connect(db_path)
    removed = prune(db, Retention(raw=48 * HOUR), NOW)
    assert removed == 30
    assert prune(db, Retention(raw=48 * HOUR), NOW) == 0  # caught up
    db.conn.close()
    assert count(db_path) == 30
    reader = StorageReader(db_path)
    week = reader.window(NOW - 7 * DAY, NOW)[1]
    reader.close()
    assert (week.checks, week.successes) == (60, 30)  # the old checks live on in rollups


def test_retention_by_rows_per_endpoint(store, db_path) -> None:
    store(*(check(NOW - 600 + i, endpoint=name) for i in range(50) for name in ("a", "b")))
    db = connect(db_path)
    prune(db, Retention(raw=48 * HOUR, raw_rows=10), NOW)
    per_target = dict(
        db.execute("SELECT target_id, COUNT(*) FROM results GROUP BY target_id").fetchall()
    )
    newest = db.execute("SELECT MIN(ts) FROM results").fetchone()[0]
    db.conn.close()
    assert per_target == {1: 10, 2: 10}
    assert newest == NOW - 600 + 40


def test_database_size_stays_bounded_under_steady_load(db_path) -> None:
    """Six simulated hours at one check a minute for 20 endpoints, raw kept one hour."""
    db = connect(db_path)
    from storage.writer import write_batch

    ids: dict = {}
    sizes = []
    for minute in range(6 * 60):
        ts = NOW + minute * 60
        batch = [check(ts, endpoint=f"e{n}") for n in range(20)]
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            write_batch(db, batch, ids)
        while prune(db, Retention(raw=HOUR), ts):
            pass
        if minute % 60 == 59:
            sizes.append(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    db.conn.close()
    assert all(size <= 20 * 61 for size in sizes), sizes  # one hour of rows, never more


def test_an_older_file_is_migrated_forward_keeping_its_rows(store, db_path) -> None:
    store(check(NOW))
    with sqlite3.connect(db_path) as connection:  # make it look like a version-1 file
        connection.execute("DROP INDEX idx_outbox_channel_dedup_key_id")
        connection.execute("DROP INDEX idx_outbox_channel_sent_next_attempt")
        connection.execute("DROP INDEX idx_results_failures")
        connection.execute("DROP TABLE silences")
        connection.execute("DROP TABLE alert_window")
        connection.execute("PRAGMA user_version = 1")
    db = connect(db_path)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    indexes = {index.name for index in db["outbox"].indexes}
    tables = set(db.table_names())
    db.conn.close()
    assert version == SCHEMA_VERSION == 5
    assert "alert_window" in tables
    assert "idx_outbox_channel_dedup_key_id" in indexes
    assert "idx_results_failures" in {index.name for index in connect(db_path)["results"].indexes}
    assert count(db_path) == 1


def test_newer_schema_is_a_clear_error(db_path) -> None:
    db = connect(db_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.conn.close()
    with pytest.raises(StorageError, match="newer than this healthcheck knows"):
        connect(db_path)


def test_reader_on_a_missing_database_says_so(tmp_path) -> None:
    with pytest.raises(StorageError, match="no database at"):
        StorageReader(str(tmp_path / "nothing.db"))


def integrity(path: str) -> str:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def written_after_loss(path: str, first_ts: float) -> int:
    """Rows in the file now at `path` from `first_ts` on (0 while there is no such database)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            query = "SELECT COUNT(*) FROM results WHERE ts >= ?"
            return connection.execute(query, [first_ts]).fetchone()[0]
    except sqlite3.Error:
        return 0


def overwrite_with_garbage(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.write(os.urandom(max(size, 4096)))


@pytest.mark.parametrize("lose", [os.remove, overwrite_with_garbage], ids=["removed", "garbage"])
def test_a_database_file_lost_while_running_is_created_anew(db_path, caplog, lose) -> None:
    """`rm` or random bytes over the file: the writer must not go on writing into a file nobody
    will read again; it logs once, sets a broken file aside and writes into a new one."""
    writer = StorageWriter(
        db_path, batch_size=10, flush_interval=0.05, clock=lambda: NOW, backoff=QUICK
    )
    writer.start()
    # Another connection on the old file keeps writing, as the alert outbox does.
    other = connect(db_path)
    for i in range(30):
        writer.submit(*check(NOW - 1000 + i))
    wait_for(lambda: writer.stats.written == 30)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages on disk, as in a long run
    lose(db_path)
    if lose is os.remove:  # the old file is still there for connections open on it
        other.execute("INSERT INTO silences (created, reason) VALUES (1, 'old file')")
    for i in range(40):
        writer.submit(*check(NOW - 500 + i))
    wait_for(lambda: written_after_loss(db_path, NOW - 500) == 40, timeout=30)
    if lose is os.remove:
        other.execute("INSERT INTO silences (created, reason) VALUES (2, 'old file')")
    other.conn.close()  # closing a connection on the old file leaves the new one alone
    for i in range(5):
        writer.submit(*check(NOW - 100 + i))
    writer.close()
    assert written_after_loss(db_path, NOW - 500) == 45
    assert integrity(db_path) == "ok"
    assert count(db_path, "silences") == 0  # nothing of the old file's connection leaked in
    replaced = [r for r in caplog.records if getattr(r, "event", None) == "storage_replaced"]
    assert len(replaced) == 1, [r.getMessage() for r in replaced]
    assert writer.stats.replaced == 1 and writer.stats.writable and writer.stats.dropped == 0
    broken = list(Path(db_path).parent.glob("healthcheck.db.broken-*"))
    assert len(broken) == (0 if lose is os.remove else 1)  # kept for a look, not overwritten


def test_the_exit_line_counts_each_unsaved_result_once(tmp_path, caplog) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the database directory should be")
    writer = StorageWriter(
        str(blocker / "db"), flush_interval=0.05, clock=lambda: NOW, backoff=QUICK
    )
    writer.start()
    for i in range(7):
        writer.submit(*check(NOW + i))
    wait_for(lambda: writer.stats.failures >= 1)
    writer.close(timeout=30)
    unflushed = [r for r in caplog.records if getattr(r, "event", None) == "storage_unflushed"]
    assert [r.unsaved for r in unflushed] == [7]
    assert "7 results unsaved" in unflushed[0].getMessage()


@pytest.mark.parametrize("bad", [dict(first=0), dict(at_exit=0.1), dict(most=4.0)])
def test_a_backoff_that_could_never_give_up_at_exit_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="first <= at_exit < most"):
        Backoff(**bad)


def test_a_batch_adds_up_its_rollups_as_tally_does(db_path) -> None:
    """write_batch adds each check into its hourly and daily rows in place (no Tally per row):
    a batch with several checks of an endpoint in one hour, across an hour's edge, failed,
    degraded and with latencies on and past the histogram's bounds, stores what Tally's own
    add_check counts, on top of what the rows held before."""
    base = DAY * (NOW // DAY) + 5 * HOUR
    checks = [
        check(base + 10, latency_ms=0.0),
        check(base + 20, ok=False, latency_ms=5000.0),
        check(base + 30, latency_ms=LATENCY_BOUNDS_MS[2]),
        check(base + 40, latency_ms=10**6),
        check(base + HOUR + 1, latency_ms=3.5),
        check(base + 50, latency_ms=12.0, endpoint="web"),
    ]
    result, _ = checks[2]
    checks[2] = (result, Status.DEGRADED)
    earlier = check(base + 5, latency_ms=50.0)
    db = connect(db_path)
    ids: dict[tuple[str, str], int] = {}
    for batch in ([earlier], checks):
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            write_batch(db, batch, ids)
    for table, width in ROLLUP_TABLES.items():
        expected: dict[tuple[str, int], Tally] = {}
        for result, status in [earlier, *checks]:
            key = (result.endpoint, bucket_of(result.timestamp, width))
            expected.setdefault(key, Tally()).add_check(
                result.ok, status is Status.DEGRADED, result.latency * 1000
            )
        stored = {
            (row[0], row[1]): list(row[2:])
            for row in db.execute(
                f"SELECT t.endpoint, r.bucket, r.checks, r.successes, r.degraded, "
                f"r.latency_sum_ms, r.latency_min_ms, r.latency_max_ms, "
                f"{', '.join('r.' + c for c in BUCKET_COLUMNS)} "
                f"FROM {table} r JOIN targets t ON t.id = r.target_id"
            )
        }
        assert stored == {
            key: [
                tally.checks,
                tally.successes,
                tally.degraded,
                tally.latency_sum_ms,
                tally.latency_min_ms,
                tally.latency_max_ms,
                *tally.histogram,
            ]
            for key, tally in expected.items()
        }, table
    db.conn.close()
