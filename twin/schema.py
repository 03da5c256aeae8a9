"""Device <-> server message schema: one object owns the wire format (versioned, size-checked, validated).

Every ZeroMQ message is one msgpack map ``{"v": 1, "type": ..., ...}``, optionally followed by a second frame
holding an HMAC-SHA256 of the first when a shared key is configured (defence in depth under CURVE, see
``twin.security``). ``Wire.decode`` raises ``ProtocolError`` for anything malformed, oversized, unknown,
out of range or unauthorised, with a short ``reason`` the caller counts; callers count and drop, never crash.
A message that passes ``decode`` has every field the receiver reads, of the right type and within range.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from twin.constants import MAX_JOINTS
from twin.display import Prediction

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
# Ranges a healthy peer never leaves; anything outside is corrupt or hostile and must not reach a predictor.
MAX_INT = 2**62  # sequence numbers and µs clocks (int64 arithmetic downstream must not overflow)
MAX_HORIZON_US = 60_000_000  # a prediction horizon beyond a minute is no twin
MAX_ABS_Q = 1e4  # joint positions (rad or m): beyond this a value is corrupt, not a pose
MAX_ABS_D = 1e7  # device velocity / acceleration estimates
MAX_ABS_COEFF = 1e12  # prediction polynomial coefficients
MAX_TEXT = 256  # device id, URDF id, policy spec, joint names, error text
MAX_PREDS = 64  # predictions in one reply (the server sends at most REPEAT_MAX)
MAX_EPOCH = 2**63

_NUM = (int, float)
# Required fields and their types per message type (device->server and server->device).
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
# Optional fields: checked when present.
_OPTIONAL: dict[str, dict[str, tuple[type, ...]]] = {
    "sample": {"k": _NUM, "a": (int,), "d": (list,)},
    "pong": {"rx": (int,)},
    "welcome": {"epoch": (int,), "derivatives": (bool,)},
    "pred": {"epoch": (int,)},
    "hb": {"stats": (dict,)},
}
_INT_FIELDS = ("seq", "t", "ts", "rx", "srv_us")  # clocks and counters: |x| < MAX_INT


class ProtocolError(ValueError):
    """A message that cannot be accepted; ``reason`` is a short counter key (e.g. 'malformed', 'auth')."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int subclass: True is no sequence number (unless bool itself is what is wanted).
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def finite_numbers(values: Any, limit: float, what: str, count: int | None = None) -> None:
    """Raise ProtocolError unless ``values`` is a list of ``count`` real numbers, all finite and |x| <= limit."""
    if not isinstance(values, list) or (count is not None and len(values) != count):
        raise ProtocolError("bad-field", f"{what} must be a list of {count if count is not None else 'some'} numbers")
    # The common case in one pass (every message on the 1 kHz path holds lists of floats): a float within ±limit
    # is finite; NaN fails the comparison. Anything else takes the loop below, which names what is wrong.
    if all(type(x) is float and -limit <= x <= limit for x in values):
        return
    for x in values:
        if not _is(x, _NUM):
            raise ProtocolError("bad-field", f"{what} holds a {type(x).__name__}, not a number")
        if not math.isfinite(x):
            raise ProtocolError("non-finite", f"{what} holds {x!r}")
        if abs(x) > limit:
            raise ProtocolError("out-of-range", f"{what} holds {x:.3g}, beyond ±{limit:g}")


class Wire:
    """Encodes and validates messages. ``key`` (bytes) adds an HMAC-SHA256 frame to every message."""

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
        if not body or not (0x80 <= body[0] <= 0x8F or body[0] in (0xDE, 0xDF)):
            # Every message is a msgpack map: anything else (garbage, arrays, deep nesting) is refused on its first
            # byte, before the decoder spends time on it.
            raise ProtocolError("malformed", "not a map")
        try:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types for bad input (incl. deep nesting)
            raise ProtocolError("malformed", f"not msgpack: {exc.__class__.__name__}") from None
        if not isinstance(msg, dict):
            raise ProtocolError("malformed", "not a map")
        if msg.get("v") != WIRE_VERSION or isinstance(msg.get("v"), bool):
            raise ProtocolError("version", f"wire version {msg.get('v')!r}, expected {WIRE_VERSION}")
        kind = msg.get("type")
        if not isinstance(kind, str) or kind not in _SCHEMA:
            raise ProtocolError("unknown", f"unknown message type {str(kind)[:40]!r}")
        spec = _SCHEMA[kind]
        for name, types in spec.items():
            if not _is(msg.get(name), types):
                raise ProtocolError("bad-field", f"{kind}.{name} missing or not {types[0].__name__}")
        for name, types in _OPTIONAL.get(kind, {}).items():
            if msg.get(name) is not None and not _is(msg[name], types):
                raise ProtocolError("bad-field", f"{kind}.{name} is not {types[0].__name__}")
        for name in _INT_FIELDS:
            if name in spec and abs(msg[name]) >= MAX_INT:
                raise ProtocolError("out-of-range", f"{kind}.{name} = {msg[name]} is beyond ±2**62")
        _CHECKS.get(kind, _no_check)(msg)
        return msg


def _no_check(msg: dict[str, Any]) -> None:
    pass


def _text(value: Any, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise ProtocolError("bad-field", f"{what} must be text of 1..{MAX_TEXT} characters")


def _check_hello(msg: dict[str, Any]) -> None:
    _text(msg["dev"], "hello.dev")
    joints = msg["joints"]
    if not 1 <= len(joints) <= MAX_JOINTS:
        raise ProtocolError("bad-field", f"hello.joints must name 1..{MAX_JOINTS} joints")
    for j in joints:
        _text(j, "hello.joints[i]")
    if len(msg["urdf"]) > 4 * MAX_TEXT or len(msg["policy"]) > 4 * MAX_TEXT:
        raise ProtocolError("bad-field", "hello.urdf / hello.policy too long")


def _check_sample(msg: dict[str, Any]) -> None:
    q = msg["q"]
    if not 1 <= len(q) <= MAX_JOINTS:
        raise ProtocolError("bad-field", f"sample.q must be 1..{MAX_JOINTS} numbers")
    finite_numbers(q, MAX_ABS_Q, "sample.q")
    if msg.get("d") is not None:  # velocity, acceleration/2 per joint
        finite_numbers(msg["d"], MAX_ABS_D, "sample.d", 2 * len(q))
    if not 0 <= msg["h"] <= MAX_HORIZON_US:
        raise ProtocolError("out-of-range", f"sample.h = {msg['h']} µs outside 0..{MAX_HORIZON_US}")
    a = msg.get("a")
    if a is not None and not 0 <= a < MAX_INT:
        raise ProtocolError("out-of-range", "sample.a (acknowledged pred_seq) must be an integer >= 0")
    k = msg.get("k")
    if k is not None and not math.isfinite(k):
        raise ProtocolError("non-finite", f"sample.k = {k!r}")


def _check_pred(msg: dict[str, Any]) -> None:
    preds = msg["preds"]
    if not 1 <= len(preds) <= MAX_PREDS:
        raise ProtocolError("bad-pred", f"pred.preds holds {len(preds)} predictions, expected 1..{MAX_PREDS}")
    for item in preds:
        check_prediction_item(item)
    epoch = msg.get("epoch")
    if epoch is not None and not 0 <= epoch < MAX_EPOCH:
        raise ProtocolError("out-of-range", "pred.epoch out of range")


def _check_welcome(msg: dict[str, Any]) -> None:
    epoch = msg.get("epoch")
    if epoch is not None and not 0 <= epoch < MAX_EPOCH:
        raise ProtocolError("out-of-range", "welcome.epoch out of range")


def check_prediction_item(item: Any) -> None:
    """``[pred_seq, t0_us, horizon_us, degree+1, flat coeffs(, server rx)]`` with every part in range; the joint
    count is checked by ``prediction_from_wire`` (only the receiver knows it)."""
    if not isinstance(item, list) or len(item) not in (5, 6):
        raise ProtocolError("bad-pred", "a prediction is a list of 5 or 6 items")
    pred_seq, t0, h, p, flat = item[:5]
    if not _is(pred_seq, (int,)) or not 1 <= pred_seq < MAX_INT:
        raise ProtocolError("bad-pred", f"prediction sequence {str(pred_seq)[:40]!r} is not an integer >= 1")
    if not _is(t0, (int,)) or abs(t0) >= MAX_INT or (len(item) == 6 and (
            not _is(item[5], (int,)) or abs(item[5]) >= MAX_INT)):
        raise ProtocolError("bad-pred", "prediction t0 / rx must be integers (µs)")
    if not _is(h, (int,)) or not 0 <= h <= MAX_HORIZON_US:
        raise ProtocolError("bad-pred", f"prediction horizon {str(h)[:40]!r} outside 0..{MAX_HORIZON_US} µs")
    if not _is(p, (int,)) or not 1 <= p <= 5:
        raise ProtocolError("bad-pred", f"prediction degree+1 {str(p)[:40]!r} outside 1..5")
    if not isinstance(flat, list) or not 1 <= len(flat) <= 5 * MAX_JOINTS or len(flat) % p:
        raise ProtocolError("bad-pred", "prediction coefficients must be degree+1 x joints numbers")
    finite_numbers(flat, MAX_ABS_COEFF, "prediction coefficients")


_CHECKS = {"hello": _check_hello, "sample": _check_sample, "pred": _check_pred, "welcome": _check_welcome}


def prediction_to_wire(pred_seq: int, pred: Prediction) -> list[Any]:
    """Compact form sent back to the device: [pred_seq, t0_us, horizon_us, degree+1, flat coeffs]."""
    return [pred_seq, pred.t0_us, pred.horizon_us, int(pred.coeffs.shape[0]), pred.coeffs.ravel().tolist()]


def prediction_from_wire(item: Any, joints: int, checked: bool = False) -> tuple[int, Prediction]:
    """Inverse of ``prediction_to_wire``; raises ProtocolError on any inconsistency (never another exception).
    ``checked``: the item is from a ``pred`` message that passed ``Wire.decode``, which checked every item already
    (checking again cost the device a tenth of a core at full load)."""
    if not checked:
        check_prediction_item(item)
    pred_seq, t0, h, p, flat = item[:5]
    if len(flat) != p * joints:
        raise ProtocolError("bad-pred", f"prediction for {len(flat) // p} joints, expected {joints}")
    coeffs = np.asarray(flat, dtype=np.float64).reshape(p, joints)
    # |q(τ)| <= Σ |c_k| H^k for 0 <= τ <= H: a prediction that could leave every pose on its own horizon is
    # corrupt (or hostile), and would be displayed, scored and recorded as the twin if it were let through.
    reach = (np.abs(coeffs) * ((h * 1e-6) ** np.arange(p))[:, None]).sum(axis=0)
    if not np.all(reach <= MAX_ABS_Q):
        raise ProtocolError("out-of-range", f"prediction reaches {float(np.max(reach)):.3g} rad within its "
                            f"horizon, beyond ±{MAX_ABS_Q:g}")
    return pred_seq, Prediction(t0_us=t0, horizon_us=h, coeffs=coeffs)
