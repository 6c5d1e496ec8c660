"""The push path's parts on real things: tokens found among many by their HMAC (a reload's new
configuration swaps them at once), and pings stored in a real SQLite file, the ones that arrive
together in one transaction, each stored before its `store` returns."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from healthcheck.config import parse_config
from healthcheck.probes import heartbeats
from healthcheck.push_api import PingStore, Tokens
from healthcheck.targets import Config
from storage.schema import connect

MANY = 500


def token(i: int) -> str:
    return f"push-token-{i:06d}-abcdef"


def fleet(tokens: dict[str, str]) -> Config:
    """A configuration of push endpoints (name -> token), and an http one beside them."""
    endpoints = [{"name": name, "kind": "push", "token": t} for name, t in tokens.items()]
    endpoints.append({"name": "site", "kind": "http", "url": "http://127.0.0.1:1/"})
    document = {"regions": {"jobs": {"endpoints": endpoints}}}
    return parse_config(json.dumps(document), "test.yaml", {})


def names(found) -> list[str]:
    return sorted(endpoint.name for endpoint in found)


def test_each_of_many_tokens_finds_its_endpoint_and_nothing_else_finds_any() -> None:
    config = fleet({f"e{i}": token(i) for i in range(MANY)} | {"twin": token(7)})
    tokens = Tokens()
    for i in range(MANY):
        assert names(tokens.matching(token(i), config)) == (["e7", "twin"] if i == 7 else [f"e{i}"])
    near = (token(1)[:-1], token(1) + "x", token(1).upper(), token(1)[1:] + "0")
    for wrong in ("", "nope", "a" * 400, "é\udc80", *near):
        assert tokens.matching(wrong, config) == []


def test_a_new_configuration_swaps_the_tokens_at_once() -> None:
    tokens = Tokens()
    before = fleet({"backup": token(1), "report": token(2)})
    assert names(tokens.matching(token(1), before)) == ["backup"]
    after = fleet({"backup": token(3), "report": token(2)})  # what a reload publishes
    assert tokens.matching(token(1), after) == []
    assert names(tokens.matching(token(3), after)) == ["backup"]
    assert names(tokens.matching(token(2), after)) == ["report"]


def test_two_processes_digest_the_same_token_apart() -> None:
    """The key is each Tokens' own: a digest seen in one says nothing in another."""
    config = fleet({"backup": token(1)})
    first, second = Tokens(), Tokens()
    first.matching(token(1), config)
    second.matching(token(1), config)
    assert first._by_digest.keys().isdisjoint(second._by_digest.keys())


async def test_pings_that_arrive_together_are_all_stored_before_their_answers(tmp_path) -> None:
    path = str(tmp_path / "hc.db")
    connect(path).conn.close()  # the database, as the daemon creates it
    store = PingStore(path)
    seen: dict[str, heartbeats.Ping | None] = {}

    async def ping(i: int) -> None:
        ping = heartbeats.Ping(1000.0 + i, i % 3 != 0, f"run {i}", float(i))
        await store.store([heartbeats.Stored("jobs", f"e{i}", ping)])
        # Returned: stored, as a check begun now in another process reads it.
        seen[f"e{i}"] = await asyncio.to_thread(heartbeats.last, path, "jobs", f"e{i}")

    try:
        await asyncio.gather(*(ping(i) for i in range(MANY)))
        again = heartbeats.Ping(5000.0, False, "again", None)
        await store.store([heartbeats.Stored("jobs", "e0", again)])  # the last one is kept
    finally:
        await store.close()
    assert seen == {
        f"e{i}": heartbeats.Ping(1000.0 + i, i % 3 != 0, f"run {i}", float(i)) for i in range(MANY)
    }
    assert heartbeats.last(path, "jobs", "e0") == again
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM push_heartbeats").fetchone() == (MANY,)
    conn.close()


def set_aside(folder) -> None:
    """What the storage writer does with a database file replaced under it, before creating it
    anew: the file moved aside, its -wal and -shm removed."""
    (folder / "hc.db").rename(folder / "aside.db")
    for suffix in ("-wal", "-shm"):
        (folder / f"hc.db{suffix}").unlink(missing_ok=True)


async def test_no_database_refuses_the_waiting_pings_and_a_replaced_one_gets_the_next(
    tmp_path,
) -> None:
    path = str(tmp_path / "hc.db")
    store = PingStore(path, wait_for_database=0.3)
    ping = heartbeats.Stored("jobs", "b", heartbeats.Ping(1.0, True, None, None))
    try:
        refused = await asyncio.gather(
            *(store.store([ping]) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(e, sqlite3.OperationalError) for e in refused), refused
        assert "no database" in str(refused[0])

        connect(path).conn.close()  # the storage writer creates it
        await store.store([ping])
        assert heartbeats.last(path, "jobs", "b") == ping.ping

        # Removed and created anew (as the storage writer does with a replaced file): the
        # next ping goes into the new file, not the one set aside.
        set_aside(tmp_path)
        connect(path).conn.close()
        later = heartbeats.Stored("jobs", "b", heartbeats.Ping(2.0, False, "late", None))
        await store.store([later])
        assert heartbeats.last(path, "jobs", "b") == later.ping
    finally:
        await store.close()


async def test_a_ping_made_while_the_database_is_being_created_waits_for_it(tmp_path) -> None:
    """The daemon's HTTP front listens before its storage writer has created the file: a job
    that pings at once waits for the file, and its ping is stored, not refused."""
    path = str(tmp_path / "hc.db")
    store = PingStore(path)
    ping = heartbeats.Stored("jobs", "b", heartbeats.Ping(1.0, True, None, None))

    async def create_later() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(lambda: connect(path).conn.close())  # the storage writer

    try:
        creating = asyncio.create_task(create_later())
        await store.store([ping])  # no file as it began: refused at once, before
        await creating
        assert heartbeats.last(path, "jobs", "b") == ping.ping
    finally:
        await store.close()


def test_a_kept_reader_sees_each_new_ping_a_new_table_and_a_replaced_file(tmp_path) -> None:
    path = str(tmp_path / "hc.db")
    reader = heartbeats.Reader()
    try:
        assert reader.last(path, "jobs", "b") is None  # no file: none, and none created
        assert not (tmp_path / "hc.db").exists()
        connect(path).conn.close()
        assert reader.last(path, "jobs", "b") is None  # no table yet
        for ts in (1.0, 2.0, 3.0):
            heartbeats.record(path, "jobs", "b", heartbeats.Ping(ts, True, None, None))
            assert reader.last(path, "jobs", "b") == heartbeats.Ping(ts, True, None, None)
        set_aside(tmp_path)
        assert reader.last(path, "jobs", "b") is None
        connect(path).conn.close()
        heartbeats.record(path, "jobs", "b", heartbeats.Ping(9.0, False, "new", None))
        assert reader.last(path, "jobs", "b") == heartbeats.Ping(9.0, False, "new", None)
    finally:
        reader.close()


@pytest.mark.parametrize("shared", [False, True])
def test_a_token_on_several_endpoints_finds_them_all(shared: bool) -> None:
    config = fleet({"a": token(1), "b": token(1) if shared else token(2)})
    assert names(Tokens().matching(token(1), config)) == (["a", "b"] if shared else ["a"])
