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


def encode_result(result: ProbeResult) -> tuple[Any, ...]:
    """The result as a tuple of plain values, in the field order of ProbeResult."""
    values = [getattr(result, name) for name in _FIELDS]
    error = values[_ERROR]
    values[_ERROR] = None if error is None else error.value
    phases = values[_PHASES]
    if phases is not None:
        values[_PHASES] = (phases.dns, phases.connect, phases.tls, phases.first_byte, phases.total)
    values[_CONDITIONS] = tuple((c.condition, c.passed, c.detail) for c in values[_CONDITIONS])
    return tuple(values)


def decode_result(values: tuple[Any, ...]) -> ProbeResult:
    fields_ = list(values)
    error = fields_[_ERROR]
    fields_[_ERROR] = None if error is None else ErrorClass(error)
    phases = fields_[_PHASES]
    if phases is not None:
        fields_[_PHASES] = Phases(*phases)
    fields_[_CONDITIONS] = tuple(ConditionOutcome(*c) for c in fields_[_CONDITIONS])
    return ProbeResult(*fields_)


# One batch, worker to daemon: (events, heartbeat, skipped, lags). `events` in the order they
# happened: an endpoint id (str) when its check starts, an encoded result when it ends; so the
# daemon knows exactly which checks are in flight and can report them if the worker dies.
# `heartbeat` is the worker dispatcher's last wake in time.monotonic(), which is the same
# clock in every process of a host; `skipped` and `lags` are new since the last batch.
Batch = tuple[list[str | tuple[Any, ...]], float | None, int, list[float]]


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
