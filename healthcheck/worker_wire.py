"""What crosses between the daemon and its probe workers: framed messages on one socket.

Results go up in batches of plain tuples encoded with `marshal`, not one pickle per object:
marshal is C all the way for str, float, int, bool, None and tuples, and a result is only
those once its enums and small dataclasses are flattened. Control messages (endpoint sets,
stop) go down pickled: they are rare, and an Endpoint carries conditions and kind settings.
"""

from __future__ import annotations

import asyncio
import marshal
import pickle
import struct
from dataclasses import fields
from operator import attrgetter
from typing import Any

from healthcheck.result import ConditionOutcome, ErrorClass, Phases, ProbeResult

# A frame: length of the payload (4 bytes, big-endian), its kind (1 byte), the payload.
_HEADER = struct.Struct("!IB")
# Worker to daemon: one batch (see Batch); daemon to worker: the first set of endpoints and
# settings (INIT), a reloaded set (ENDPOINTS), and STOP with the drain grace.
BATCH, INIT, ENDPOINTS, STOP = 1, 2, 3, 4
# A batch bigger than this is a bug or a stranger on the socket, not a burst of results.
MAX_FRAME = 256 * 1024 * 1024

_FIELDS = tuple(field.name for field in fields(ProbeResult))
_ERROR = _FIELDS.index("error")
_PHASES = _FIELDS.index("phases")
_CONDITIONS = _FIELDS.index("conditions")
# Every field of a result in one C call: a tuple, in field order (15 getattr calls in Python
# measured as most of encoding).
_VALUES = attrgetter(*_FIELDS)


def encode_result(result: ProbeResult) -> tuple[Any, ...]:
    """The result as a tuple of plain values, in the field order of ProbeResult."""
    values: tuple[Any, ...] = _VALUES(result)
    error, phases, conditions = result.error, result.phases, result.conditions
    if error is None and phases is None and not conditions:
        return values  # already plain: nothing to flatten
    flat = list(values)
    if error is not None:
        flat[_ERROR] = error.value
    if phases is not None:
        flat[_PHASES] = (phases.dns, phases.connect, phases.tls, phases.first_byte, phases.total)
    if conditions:
        flat[_CONDITIONS] = tuple((c.condition, c.passed, c.detail) for c in conditions)
    return tuple(flat)


def decode_result(values: tuple[Any, ...]) -> ProbeResult:
    error, phases, conditions = values[_ERROR], values[_PHASES], values[_CONDITIONS]
    if error is None and phases is None and not conditions:
        return ProbeResult(*values)
    flat = list(values)
    if error is not None:
        # The daemon's own instance of the name: declared where the daemon imported the
        # kind (it did, to load the configuration), else an undeclared class of that name.
        flat[_ERROR] = ErrorClass(error)
    if phases is not None:
        flat[_PHASES] = Phases(*phases)
    flat[_CONDITIONS] = tuple(ConditionOutcome(*c) for c in conditions) if conditions else ()
    return ProbeResult(*flat)


def ended_id(values: tuple[Any, ...]) -> str:
    """The `region/name` of an encoded result, as its start event named it, without decoding."""
    return f"{values[0]}/{values[1]}"


# One batch, worker to daemon: (events, heartbeat, skipped, lags, dropped). `events` in the
# order they happened: an endpoint id (str) when its check starts, an encoded result when it
# ends; so the daemon knows exactly which checks are in flight and can report them if the
# worker dies. `heartbeat` is the worker dispatcher's last wake in time.monotonic(), which is
# the same clock in every process of a host; `skipped` and `lags` are new since the last
# batch; `dropped`: results this worker could not hand up since the last batch because the
# daemon did not read them in time (see probe_worker.Outbox).
Batch = tuple[list[str | tuple[Any, ...]], float | None, int, list[float], int]


def pack_batch(batch: Batch) -> bytes:
    return frame(BATCH, marshal.dumps(batch))


def unpack_batch(payload: bytes) -> Batch:
    batch: Batch = marshal.loads(payload)  # noqa: S302 (from our own worker, see above)
    return batch


def pack_control(kind: int, message: object) -> bytes:
    return frame(kind, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def unpack_control(payload: bytes) -> Any:
    # Only ever from the daemon that started this worker, over a socketpair it made.
    return pickle.loads(payload)  # noqa: S301


def frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next (kind, payload), or None at the end of the stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
        length, kind = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ValueError(f"a frame of {length} bytes")
        return kind, await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


class Frames:
    """Splits a byte stream into frames: `feed` it what arrived, get the complete frames in
    order; a partial one waits for the rest. For a reader that takes many frames in one read
    (the daemon, see workers.READ_EVERY) rather than one `read_frame` each."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames `data` completes, as (kind, payload); ValueError on one over MAX_FRAME."""
        buffer = self._buffer
        buffer += data
        frames = []
        start, size = 0, _HEADER.size
        while len(buffer) - start >= size:
            length, kind = _HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise ValueError(f"a frame of {length} bytes")
            end = start + size + length
            if end > len(buffer):
                break
            frames.append((kind, bytes(buffer[start + size : end])))
            start = end
        del buffer[:start]
        return frames
