"""The private link between the front of ``armtwin server --workers N`` and its worker processes.

Both directions carry batches: one ZeroMQ multipart message holds many records, each a 10-byte header
(kind, frame count, a 64-bit value) followed by its frames, so under load the front and a worker pay one
send/receive per batch instead of one per device message. The link is ``ipc://`` in a directory only the
server's user can open (``tempfile.mkdtemp`` makes it 0700): the workers see plaintext, never the network.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack

_HEAD = struct.Struct("<BBq")  # kind, number of frames that follow, value (rx µs, worker index, ...)

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
MAX_FRAMES = 255  # a ROUTER message with more frames than this is dropped by the front ("malformed")


def record(out: list[bytes], kind: int, frames: list[bytes], value: int = 0) -> None:
    """Append one record to the batch ``out``."""
    out.append(_HEAD.pack(kind, len(frames), value))
    out.extend(frames)


def records(batch: list[bytes]) -> Iterator[tuple[int, int, list[bytes]]]:
    """The (kind, value, frames) records of a received batch; stops at a truncated record."""
    i, n = 0, len(batch)
    while i < n:
        if len(batch[i]) != _HEAD.size:
            raise ValueError(f"bad record header of {len(batch[i])} bytes")
        kind, count, value = _HEAD.unpack(batch[i])
        if i + 1 + count > n:
            raise ValueError("truncated record")
        yield kind, value, batch[i + 1:i + 1 + count]
        i += 1 + count


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj)  # type: ignore[no-any-return]


def unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)
