"""The private link between the front of ``armtwin server --workers N`` and its worker processes.

Both directions carry batches: one ZeroMQ message (a single frame) holds many records, each an 11-byte header
(kind, frame count, a 64-bit value) followed by its frames as (u32 length, bytes), so under load the front and a
worker pay one send/receive per batch instead of several per device message (pyzmq's cost is per frame).
The link is ``ipc://`` in a directory only the server's user can open (``tempfile.mkdtemp`` makes it 0700):
the workers see plaintext, never the network.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack

_HEAD = struct.Struct("<BHq")  # kind, number of frames that follow, value (rx µs, worker index, ...)
_LEN = struct.Struct("<I")

# front -> worker
MSG = 0  # value = rx (server time, µs); frames = [identity, *body] as the ROUTER received them
STOP = 1  # send FINAL and exit
# worker -> front
REPLY = 10  # frames = [identity, *reply]: the front sends it on the ROUTER
TWIN = 11  # frames = [device id, msgpack twin state]: PUB and the upper tier
STATUS = 12  # frames = [device id, msgpack status]: the upper tier
STATS = 13  # value = worker index; frames = [msgpack counters, sessions]; the first one means "ready"
LOG = 14  # frames = [a session event line]
FINAL = 15  # value = worker index; frames = [msgpack counters, sessions] when the worker stops
MAX_FRAMES = 64  # a ROUTER message with more frames than this is dropped by the front ("malformed")


def record(out: list[bytes], kind: int, frames: list[bytes], value: int = 0) -> None:
    """Append one record to the batch ``out`` (sent as ``b"".join(out)``)."""
    out.append(_HEAD.pack(kind, len(frames), value))
    for f in frames:
        out.append(_LEN.pack(len(f)))
        out.append(f)


def records(batch: bytes) -> Iterator[tuple[int, int, list[bytes]]]:
    """The (kind, value, frames) records of a received batch; ValueError at a truncated or malformed one."""
    i, n = 0, len(batch)
    head, size = _HEAD.unpack_from, _LEN.unpack_from
    while i < n:
        if i + _HEAD.size > n:
            raise ValueError("truncated record header")
        kind, count, value = head(batch, i)
        i += _HEAD.size
        frames = []
        for _ in range(count):
            if i + 4 > n:
                raise ValueError("truncated record")
            (length,) = size(batch, i)
            i += 4
            if i + length > n:
                raise ValueError("truncated record")
            frames.append(batch[i:i + length])
            i += length
        yield kind, value, frames


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj)  # type: ignore[no-any-return]


def unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)
