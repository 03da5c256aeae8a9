"""The upper tier: an edge server publishes its arms on Eclipse Zenoh, for viewers and services anywhere.

Key expressions: ``armtwin/<site>/<device>/twin`` carries every twin state (the same msgpack body as the PUB
feed) and ``armtwin/<site>/<device>/status`` the session's status whenever it changes (connected, samples, the
device's own status fields). A queryable on ``armtwin/<site>/**`` answers the latest value of every key a query
matches, so a late joiner (``armtwin view --zenoh``) has each arm at once instead of waiting for its next sample.
Zenoh does the routing, discovery and transport security (TLS, access control: README); this module only maps
the server's output onto keys. ``zenoh`` is imported lazily: the controller's install does not need it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

EXTRA_HINT = "the Zenoh tier needs eclipse-zenoh: pip install 'armtwin[zenoh]'"
SITE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_KEYS = 8192  # latest values kept for the queryable: a flood of device names must not grow memory


class ZenohSetupError(ValueError):
    """The tier cannot start: zenoh missing, a bad site name, a bad config file or endpoint."""


def import_zenoh() -> Any:
    try:
        import zenoh
    except ImportError:
        raise ZenohSetupError(EXTRA_HINT) from None
    return zenoh


def key_chunk(name: str) -> str:
    """A device name as one key-expression chunk: no '/', and none of Zenoh's wildcard characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def _resolve_port_zero(ep: str) -> str:
    """``tcp/HOST:0`` -> a free port now (Zenoh does not report the port it picked), as ZeroMQ's ``:*``."""
    m = re.fullmatch(r"(tcp|udp)/(.+):0", ep)
    if not m:
        return ep
    host = m.group(2).strip("[]")
    kind = socket.SOCK_STREAM if m.group(1) == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return f"{m.group(1)}/{m.group(2)}:{s.getsockname()[1]}"


def zenoh_config(config_file: str | Path | None, connect: list[str], listen: list[str]) -> tuple[Any, list[str]]:
    """A Zenoh config: the JSON5 file if given, else a peer; ``connect``/``listen`` endpoints override it, and
    with explicit endpoints and no file multicast scouting is off (the topology is what was asked for).
    Returns the config and the listen endpoints with any ``:0`` port resolved."""
    zenoh = import_zenoh()
    listen = [_resolve_port_zero(ep) for ep in listen]
    try:
        if config_file is not None:
            conf = zenoh.Config.from_file(str(config_file))
        else:
            conf = zenoh.Config()
            conf.insert_json5("mode", '"peer"')
            if connect or listen:
                conf.insert_json5("scouting/multicast/enabled", "false")
        if connect:
            conf.insert_json5("connect/endpoints", json.dumps(connect))
        if listen:
            conf.insert_json5("listen/endpoints", json.dumps(listen))
    except (zenoh.ZError, ValueError, OSError) as exc:
        raise ZenohSetupError(f"bad Zenoh configuration ({config_file or 'flags'}): {exc}") from None
    return conf, listen


def open_session(conf: Any) -> Any:
    zenoh = import_zenoh()
    try:
        return zenoh.open(conf)
    except zenoh.ZError as exc:
        raise ZenohSetupError(f"cannot open a Zenoh session: {exc} (is the listen port taken, or the router "
                              "unreachable?)") from None


class ZenohTier:
    """One edge server's Zenoh publisher and queryable (``server.sessions.UpperTier``)."""

    def __init__(self, site: str, config_file: str | Path | None = None, connect: list[str] | None = None,
                 listen: list[str] | None = None, log: Callable[[str], None] | None = None) -> None:
        if not SITE_RE.match(site):
            raise ZenohSetupError(f"--site {site!r}: use 1-64 letters, digits, '_', '.' or '-' (it becomes a "
                                  "Zenoh key chunk)")
        conf, self.listen = zenoh_config(config_file, connect or [], listen or [])
        self.log = log or (lambda line: None)
        self.prefix = f"armtwin/{site}"
        self._zenoh = import_zenoh()
        self.session = open_session(conf)
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, bytes] = OrderedDict()
        self._pubs: dict[str, Any] = {}
        self.twins = self.statuses = self.queries = self.errors = 0
        self._queryable = self.session.declare_queryable(f"{self.prefix}/**", self._on_query)

    def _put(self, key: str, body: bytes) -> None:
        pub = self._pubs.get(key)
        if pub is None:
            if len(self._pubs) >= MAX_KEYS:
                self._pubs.pop(next(iter(self._pubs))).undeclare()
            pub = self._pubs[key] = self.session.declare_publisher(key)
        try:
            pub.put(body)
        except self._zenoh.ZError as exc:  # counted; the ZeroMQ side goes on
            self.errors += 1
            if self.errors == 1:
                self.log(f"error: Zenoh put on {key} failed ({exc}); counting further failures")
        with self._lock:
            self._latest[key] = body
            self._latest.move_to_end(key)
            if len(self._latest) > MAX_KEYS:
                self._latest.popitem(last=False)

    def twin(self, dev: str, body: bytes) -> None:
        self.twins += 1
        self._put(f"{self.prefix}/{key_chunk(dev)}/twin", body)

    def status(self, dev: str, status: dict[str, Any]) -> None:
        self.statuses += 1
        self._put(f"{self.prefix}/{key_chunk(dev)}/status", msgpack.packb({"dev": dev, **status}))

    def _on_query(self, query: Any) -> None:
        """Zenoh's thread: reply with the latest value of every key the query's selector matches."""
        wanted = query.key_expr
        with self._lock:
            items = list(self._latest.items())
        for key, body in items:
            if self._zenoh.KeyExpr(key).intersects(wanted):
                query.reply(key, body)
        self.queries += 1

    def summary(self) -> str:
        return (f"  zenoh: {self.twins} twin states and {self.statuses} status changes under {self.prefix}/**, "
                f"{self.queries} queries answered, {self.errors} put errors")

    def close(self) -> None:
        if self.session is None:
            return
        self._queryable.undeclare()
        for pub in self._pubs.values():
            pub.undeclare()
        self._pubs.clear()
        self.session.close()
        self.session = None
