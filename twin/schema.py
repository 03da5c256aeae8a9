"""Device <-> server message schema: one object owns the wire format (versioned, size-checked, authenticated).

Every ZeroMQ message is one msgpack map ``{"v": 1, "type": ..., ...}``, optionally followed by a second frame
holding an HMAC-SHA256 of the first when a shared key is configured. ``Wire.decode`` raises ``ProtocolError``
for anything malformed, oversized, unknown or unauthorised; callers count and drop, never crash.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from twin.constants import MAX_JOINTS
from twin.display import Prediction

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024

# Required fields and their types per message type (device->server and server->device).
_NUM = (int, float)
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"dev": (str,), "joints": (list,), "rate_hz": _NUM, "urdf": (str,), "policy": (str,)},
    "welcome": {"dev": (str,), "srv_us": (int,), "predictor": (str,)},
    "sample": {"seq": (int,), "t": (int,), "q": (list,), "h": (int,), "ts": (int,)},
    "hb": {"ts": (int,)},
    "pong": {"ts": (int,), "srv_us": (int,)},
    "pred": {"seq": (int,), "ts": (int,), "rx": (int,), "preds": (list,)},
    "error": {"code": (str,), "msg": (str,)},
    "bye": {},
}


class ProtocolError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short counter key (e.g. 'malformed', 'auth')."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Wire:
    """Encodes and validates messages. ``key`` (bytes) enables HMAC authentication of every message."""

    def __init__(self, key: bytes | None = None, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.key = key
        self.max_bytes = max_bytes

    def encode(self, msg_type: str, **fields: Any) -> list[bytes]:
        body = msgpack.packb({"v": WIRE_VERSION, "type": msg_type, **fields}, use_bin_type=True)
        if len(body) > self.max_bytes:
            raise ProtocolError("oversize", f"{msg_type} message of {len(body)} bytes > {self.max_bytes}")
        if self.key is None:
            return [body]
        return [body, hmac.new(self.key, body, hashlib.sha256).digest()]

    def decode(self, frames: Sequence[bytes]) -> dict[str, Any]:
        if not frames:
            raise ProtocolError("malformed", "empty message")
        body = frames[0]
        if len(body) > self.max_bytes:
            raise ProtocolError("oversize", f"{len(body)} bytes > {self.max_bytes}")
        if self.key is not None:
            if len(frames) != 2 or not hmac.compare_digest(
                hmac.new(self.key, body, hashlib.sha256).digest(), frames[1]
            ):
                raise ProtocolError("auth", "missing or wrong HMAC")
        elif len(frames) != 1:
            raise ProtocolError("malformed", f"{len(frames)} frames, expected 1 (is a key configured on one side?)")
        try:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise ProtocolError("malformed", f"not msgpack: {exc.__class__.__name__}") from None
        if not isinstance(msg, dict):
            raise ProtocolError("malformed", "not a map")
        if msg.get("v") != WIRE_VERSION:
            raise ProtocolError("version", f"wire version {msg.get('v')!r}, expected {WIRE_VERSION}")
        spec = _SCHEMA.get(msg.get("type"))  # type: ignore[arg-type]
        if spec is None:
            raise ProtocolError("unknown", f"unknown message type {msg.get('type')!r}")
        for name, types in spec.items():
            if not isinstance(msg.get(name), types) or isinstance(msg.get(name), bool):
                raise ProtocolError("malformed", f"{msg['type']}.{name} missing or not {types[0].__name__}")
        if msg["type"] == "sample":
            q = msg["q"]
            if not 1 <= len(q) <= MAX_JOINTS or not all(isinstance(x, float | int) for x in q):
                raise ProtocolError("malformed", "sample.q must be 1..32 numbers")
            d = msg.get("d")
            if d is not None and (not isinstance(d, list) or len(d) != 2 * len(q)
                                  or not all(isinstance(x, float | int) for x in d)):
                raise ProtocolError("malformed", "sample.d must be 2 x joints numbers (velocity, acceleration/2)")
            a = msg.get("a")
            if a is not None and (not isinstance(a, int) or isinstance(a, bool) or a < 0):
                raise ProtocolError("malformed", "sample.a (acknowledged pred_seq) must be an integer >= 0")
        return msg


def prediction_to_wire(pred_seq: int, pred: Prediction) -> list[Any]:
    """Compact form sent back to the device: [pred_seq, t0_us, horizon_us, degree+1, flat coeffs]."""
    return [pred_seq, pred.t0_us, pred.horizon_us, int(pred.coeffs.shape[0]), pred.coeffs.ravel().tolist()]


def prediction_from_wire(item: Any, joints: int) -> tuple[int, Prediction]:
    """Inverse of ``prediction_to_wire``; raises ProtocolError on any inconsistency."""
    try:
        pred_seq, t0, h, p, flat = item[:5]
        coeffs = np.asarray(flat, dtype=np.float64).reshape(int(p), joints)
        if not (isinstance(t0, int) and isinstance(h, int) and h >= 0 and 1 <= p <= 5):
            raise ValueError("bad header")
    except (ValueError, TypeError) as exc:
        raise ProtocolError("malformed", f"bad prediction: {exc}") from None
    return int(pred_seq), Prediction(t0_us=t0, horizon_us=h, coeffs=coeffs)
