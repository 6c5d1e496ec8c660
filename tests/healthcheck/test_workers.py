"""Probe workers' pure parts: the `scheduler.workers` key, who checks what, the wire encoding."""

from __future__ import annotations

import asyncio
import json
import os
import socket

import pytest

from healthcheck import worker_wire as wire
from healthcheck.config import parse_config
from healthcheck.probe_worker import Outbox
from healthcheck.result import ConditionOutcome, EndpointId, ErrorClass, Phases, ProbeResult
from healthcheck.targets import Shard
from healthcheck.workers import MAX_AUTO_WORKERS, default_workers, owner, worker_count


def config_with(scheduler: dict | None, kinds: dict[str, dict] | None = None):
    endpoints = [{"name": f"e{i}", "url": "http://127.0.0.1:1/"} for i in range(40)]
    endpoints += [{"name": name, **spec} for name, spec in (kinds or {}).items()]
    document: dict = {"regions": {"r": {"endpoints": endpoints}}}
    if scheduler is not None:
        document["scheduler"] = scheduler
    return parse_config(json.dumps(document), "test")


@pytest.mark.parametrize(
    ("scheduler", "count"),
    [(None, None), ({"workers": "auto"}, None), ({"workers": 1}, 1), ({"workers": 3}, 3)],
)
def test_workers_key(scheduler, count) -> None:
    settings = config_with(scheduler).scheduler
    assert settings.workers == count
    assert worker_count(settings) == (count or default_workers())


def test_default_is_one_worker_per_core_this_process_may_use_up_to_a_cap() -> None:
    assert default_workers() == min(len(os.sched_getaffinity(0)), MAX_AUTO_WORKERS)


def test_endpoints_go_to_workers_by_a_stable_hash_and_canaries_to_the_first() -> None:
    config = config_with(
        None, {"canary": {"kind": "onnx", "model": "builtin:gemm", "require_gpu": False}}
    )
    slots = {e.id: owner(e, 3) for e in config.endpoints()}
    assert slots[EndpointId("r", "canary")] == 0
    assert set(slots.values()) == {0, 1, 2}
    again = config_with(None, {"canary": {"kind": "onnx", "model": "builtin:gemm"}})
    assert {e.id: owner(e, 3) for e in again.endpoints()} == slots


@pytest.mark.parametrize(("shards", "workers"), [(2, 2), (4, 2), (3, 3), (2, 4)])
def test_a_shards_endpoints_spread_over_every_worker(shards, workers) -> None:
    """--shard K/N and the workers split by the same hash, but not by the same bits of it."""
    config = config_with(None)
    for k in range(1, shards + 1):
        mine = config.only_shard(Shard(k, shards))
        assert {owner(e, workers) for e in mine.endpoints()} == set(range(workers))


@pytest.mark.parametrize(
    "result",
    [
        ProbeResult("r", "e", "http", ok=True, latency=0.012, timestamp=1_700_000_000.25),
        ProbeResult(
            "eu-west",
            "api",
            "http",
            ok=False,
            latency=0.5,
            timestamp=1_700_000_001.0,
            error=ErrorClass.CONDITION_FAILED,
            error_text="[BODY].status == UP: saw DOWN",
            http_status=200,
            phases=Phases(dns=0.001, connect=0.002, tls=None, first_byte=0.4, total=0.5),
            conditions=(
                ConditionOutcome("[STATUS] == 200", True),
                ConditionOutcome("[BODY].status == UP", False, "DOWN"),
            ),
            attempts=2,
            cert_expiry=1_800_000_000.0,
            details=(("loop_lag_ms", 3.5), ("provider", "CPU"), ("gpu", None), ("n", 2)),
            degraded="on CPU",
        ),
    ],
)
def test_a_result_crosses_the_wire_unchanged(result) -> None:
    batch = (["r/e", wire.encode_result(result)], 123.5, 2, [0.001, 0.02], 7)
    payload = wire.pack_batch(batch)
    kind, body = payload[4], payload[5:]
    assert kind == wire.BATCH
    events, heartbeat, skipped, lags, dropped = wire.unpack_batch(body)
    assert events[0] == "r/e"
    assert (heartbeat, skipped, lags, dropped) == (123.5, 2, [0.001, 0.02], 7)
    assert wire.decode_result(events[1]) == result
    assert wire.ended_id(events[1]) == str(result.target_id)


def test_frames_split_a_stream_however_it_was_cut() -> None:
    """The daemon reads whatever its worker's socket holds: frames cut anywhere, several in
    one read, come out whole and in order."""
    sent = [wire.pack_batch(([f"r/e{i}"], float(i), i, [], 0)) for i in range(5)] + [
        wire.pack_control(wire.STOP, 2.5)
    ]
    stream = b"".join(sent)
    for cut in (1, 3, 7, len(sent[0]), 50, len(stream)):
        frames = wire.Frames()
        got = []
        for start in range(0, len(stream), cut):
            got += frames.feed(stream[start : start + cut])
        assert [kind for kind, _ in got] == [wire.BATCH] * 5 + [wire.STOP]
        assert [wire.unpack_batch(p)[0] for _, p in got[:5]] == [[f"r/e{i}"] for i in range(5)]
        assert wire.unpack_control(got[5][1]) == 2.5


def test_frames_refuse_one_over_the_limit() -> None:
    header = (wire.MAX_FRAME + 1).to_bytes(4, "big") + bytes([wire.BATCH])
    with pytest.raises(ValueError, match="a frame of"):
        wire.Frames().feed(header)


def result_of(name: str) -> ProbeResult:
    return ProbeResult("r", name, "http", ok=True, latency=0.01, timestamp=1_700_000_000.0)


async def read_batches(reader: asyncio.StreamReader, results: int) -> tuple[list, int]:
    """Batches from the worker's side until `results` results came: their events, and the
    results they say were dropped."""
    events: list = []
    dropped = 0
    while sum(1 for e in events if not isinstance(e, str)) < results:
        frame = await asyncio.wait_for(wire.read_frame(reader), 30)
        assert frame is not None and frame[0] == wire.BATCH
        batch = wire.unpack_batch(frame[1])
        events += batch[0]
        dropped += batch[4]
    return events, dropped


async def test_the_outbox_holds_at_most_max_held_and_counts_what_it_drops() -> None:
    """More events than it may hold between two flushes: the newest stay, the oldest results
    go and the next batch says how many."""
    mine, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=mine)
    reader, _ = await asyncio.open_connection(sock=theirs)
    outbox = Outbox(writer, max_held=10)
    for i in range(100):
        outbox.result(result_of(f"e{i}"))
    assert outbox.dropped == 90
    events, dropped = await read_batches(reader, 10)
    assert [wire.decode_result(e).endpoint for e in events] == [f"e{i}" for i in range(90, 100)]
    assert dropped == 90
    writer.close()


async def test_the_outbox_holds_results_while_the_daemon_does_not_read() -> None:
    """The daemon's side of the socket full and unread: no batch is written past the bound,
    none is lost while under MAX_HELD, and all come once the daemon reads again."""
    mine, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=mine)
    reader, _ = await asyncio.open_connection(sock=theirs)
    backlog = 16 << 20  # far more than the kernel buffers: the rest waits in the transport
    writer.write(b"x" * backlog)
    waiting = writer.transport.get_write_buffer_size()
    assert waiting > 1 << 20
    outbox = Outbox(writer, max_held=1000, hold_after=1 << 20)
    for i in range(50):
        outbox.result(result_of(f"e{i}"))
    outbox.flush()
    assert writer.transport.get_write_buffer_size() == waiting  # held, not queued behind
    await reader.readexactly(backlog)  # the daemon catches up
    events, dropped = await read_batches(reader, 50)
    assert [wire.decode_result(e).endpoint for e in events] == [f"e{i}" for i in range(50)]
    assert dropped == 0 and outbox.dropped == 0
    writer.close()
