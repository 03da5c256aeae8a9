"""ZeroMQ endpoints as users type them: ``tcp://HOST:PORT``, or just ``HOST:PORT`` / ``:PORT`` / ``PORT``."""

from __future__ import annotations

import ipaddress
import socket

FORMS = "tcp://HOST:PORT (or HOST:PORT, :PORT, PORT; ipc://PATH)"


class EndpointError(ValueError):
    """An endpoint that cannot be used; the message shows the accepted forms."""


def endpoint(text: str, bind: bool = False) -> str:
    """Normalise ``text`` to a ZeroMQ endpoint. Without a scheme it is TCP; a missing host is every interface when
    binding and this machine when connecting. Binding needs an address, so a host name is resolved (ZeroMQ binds
    interfaces, and ``tcp://localhost:5555`` would fail with a misleading error)."""
    raw = text.strip()
    if not raw:
        raise EndpointError(f"empty endpoint; expected {FORMS}")
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "tcp", raw
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise EndpointError(f"{text!r}: {scheme}:// needs a path; expected {FORMS}")
        return f"{scheme}://{rest}"
    if scheme != "tcp":
        raise EndpointError(f"{text!r}: unsupported transport {scheme!r}; expected {FORMS}")
    host, colon, port = rest.rpartition(":")
    if not colon:
        host, port = "", rest
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise EndpointError(f"{text!r}: port must be 1..65535 (or * when binding); expected {FORMS}")
    if port == "*" and not bind:
        raise EndpointError(f"{text!r}: a random port (*) only makes sense when binding; expected {FORMS}")
    host = host.strip("[]") or ("*" if bind else "127.0.0.1")
    if bind and host != "*":
        host = _address(host, text)
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def _address(host: str, text: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise EndpointError(f"{text!r}: cannot resolve {host!r} to an address to bind ({exc}); "
                            f"give an IP address or * for every interface") from exc
