"""Twin states from the Zenoh upper tier: every arm of every edge server a key expression matches.

``ZenohFeed`` is a ``TwinFeed`` whose states come from a Zenoh subscriber on e.g. ``armtwin/**`` instead of a
ZeroMQ SUB socket; each arm is named ``<site>/<device>`` so equal device names on two edge servers stay apart.
On start it also queries the same key expression: the edge servers' queryables answer with each arm's latest
state and status, so an arm that is quiet right now still appears at once. Zenoh delivers on its own threads;
the feed hands the samples to the viewer's loop through a bounded queue (overflow is counted in ``bad``).
"""

from __future__ import annotations

import argparse
import queue
from pathlib import Path
from typing import Any

import msgpack

from server.zenoh_tier import import_zenoh, open_session, zenoh_config
from viewer.feed import DeviceView, TwinFeed, local_us

QUEUE_MAX = 20_000
QUERY_TIMEOUT_S = 5.0


def split_key(key: str) -> tuple[str, str, str] | None:
    """``armtwin/<site>/<device>/<kind>`` -> (site, device, kind); None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "armtwin" or parts[3] not in ("twin", "status"):
        return None
    return parts[1], parts[2], parts[3]


class ZenohFeed(TwinFeed):
    """A Zenoh session, a subscriber on ``key_expr`` and one query for the latest states; ``poll`` as TwinFeed."""

    def __init__(self, key_expr: str, devices: list[str] | None = None, config_file: str | Path | None = None,
                 connect: list[str] | None = None, listen: list[str] | None = None) -> None:
        self.zenoh = import_zenoh()
        self.key_expr = key_expr
        try:
            self.zenoh.KeyExpr(key_expr)
        except self.zenoh.ZError as exc:
            raise ValueError(f"--zenoh {key_expr!r} is not a key expression ({exc}); e.g. 'armtwin/**' or "
                             "'armtwin/site1/*/twin'") from None
        conf, _ = zenoh_config(config_file, connect or [], listen or [])
        self.wanted = set(devices) if devices else None
        self.devices: dict[str, DeviceView] = {}
        self.messages = self.bad = self.from_query = 0
        self.first_from_query: set[str] = set()  # arms the queryable showed before any live state
        self._q: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(QUEUE_MAX)
        self._dropped = 0
        self._tier_status: dict[str, dict[str, Any]] = {}  # the edge server's status of each arm
        self.session = open_session(conf)
        self._sub = self.session.declare_subscriber(key_expr, lambda s: self._push(s, False))
        self.session.get(key_expr, lambda r: self._push(r.ok, True) if r.ok is not None else None,
                         timeout=QUERY_TIMEOUT_S)

    def _push(self, sample: Any, queried: bool) -> None:
        """Zenoh's thread: queue (key, payload, from the queryable?)."""
        try:
            self._q.put_nowait((str(sample.key_expr), sample.payload.to_bytes(), queried))
        except queue.Full:
            self._dropped += 1

    def poll(self, timeout_ms: int) -> list[DeviceView]:
        new: list[DeviceView] = []
        try:
            item = self._q.get(timeout=max(timeout_ms, 0) / 1000)
        except queue.Empty:
            return new
        for _ in range(2000):  # as TwinFeed: a flood cannot starve the display
            key, body, queried = item
            self.messages += 1
            try:
                dv = self._take(key, body, queried)
            except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException):
                self.bad += 1
                dv = None
            if dv is not None:
                new.append(dv)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
        self.bad += self._dropped
        self._dropped = 0
        return new

    def _take(self, key: str, body: bytes, queried: bool) -> DeviceView | None:
        parts = split_key(key)
        if parts is None:
            raise ValueError(f"not an armtwin key: {key}")
        site, dev, kind = parts
        name = f"{site}/{dev}"
        dv = self.devices.get(name)
        if kind == "status":
            status = msgpack.unpackb(body, raw=False)
            if not isinstance(status, dict):
                raise ValueError("status is not a map")
            if name in self._tier_status or len(self._tier_status) < QUEUE_MAX:
                self._tier_status[name] = status  # may come before the arm's first state
            if dv is not None:
                dv.status = {**dv.status, **status}
            return None
        if queried:
            self.from_query += 1
            if dv is not None:
                return None  # a live state came first: it is newer than what the queryable held
        dv = self._apply([key.encode(), body], local_us(), name)
        if dv is not None and queried:
            self.first_from_query.add(name)
        shown = self.devices.get(name)
        if shown is not None and name in self._tier_status:  # a twin state carries the device's own status only
            shown.status = {**shown.status, **self._tier_status[name]}
        return dv

    def close(self) -> None:
        self._sub.undeclare()
        self.session.close()


def zenoh_feed_factory(args: argparse.Namespace) -> Any:
    """None for the ZeroMQ feed; with --zenoh, a function opening the Zenoh feed (options checked now)."""
    zenoh_opts = args.zenoh_config or args.zenoh_connect or args.zenoh_listen
    if args.zenoh is None:
        if zenoh_opts:
            raise ValueError("--zenoh-config/--zenoh-connect/--zenoh-listen need --zenoh KEYEXPR")
        return None
    if args.sub:
        raise ValueError("--zenoh and --sub are two different feeds: pick one")
    zenoh = import_zenoh()
    try:
        zenoh.KeyExpr(args.zenoh)
    except zenoh.ZError as exc:
        raise ValueError(f"--zenoh {args.zenoh!r} is not a key expression ({exc}); e.g. 'armtwin/**'") from None
    zenoh_config(args.zenoh_config, args.zenoh_connect, [])  # a bad file fails here, before any window opens
    return lambda: ZenohFeed(args.zenoh, args.device, args.zenoh_config, args.zenoh_connect, args.zenoh_listen)
