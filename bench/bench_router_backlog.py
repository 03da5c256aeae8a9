"""What a ROUTER's backlog costs in memory: RSS per queued message when each small message arrives in a TCP read
of its own (a server that has fallen behind its devices), and when they arrive back to back.

    python bench/bench_router_backlog.py [--messages 5000] [--bytes 250]

A DEALER sends ``--messages`` messages of ``--bytes`` to a ROUTER on loopback that does not read them (its
RCVHWM raised so that none is refused), CURVE and plaintext; first spaced (a pause after each, so each is its own
TCP segment), then in one burst. Prints KB of RSS per queued message. ``server/public_sockets.py``'s ROUTER_RCVHWM
comment quotes it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Any

import zmq


def rss_kb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1024


def kb_per_message(curve: bool, spaced: bool, messages: int, size: int) -> float:
    ctx: zmq.Context[Any] = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.setsockopt(zmq.RCVHWM, messages + 10)
        dealer.setsockopt(zmq.SNDHWM, messages + 10)
        if curve:
            server_public, server_secret = zmq.curve_keypair()
            client_public, client_secret = zmq.curve_keypair()
            router.curve_server, router.curve_secretkey, router.curve_publickey = True, server_secret, server_public
            dealer.curve_serverkey, dealer.curve_publickey, dealer.curve_secretkey = (server_public, client_public,
                                                                                      client_secret)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"x" * size)
        router.recv_multipart()  # connected (and the CURVE handshake done)
        base = rss_kb()
        for _ in range(messages):
            dealer.send(b"x" * size)
            if spaced:
                time.sleep(0.0002)
        deadline = time.monotonic() + 10
        while router.getsockopt(zmq.EVENTS) & zmq.POLLIN == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # let the I/O thread take in the rest
        return (rss_kb() - base) / messages
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--bytes", type=int, default=250)
    args = ap.parse_args()
    for spaced in (True, False):
        for curve in (True, False):
            kb = kb_per_message(curve, spaced, args.messages, args.bytes)
            print(f"{'spaced' if spaced else 'burst '} {'CURVE    ' if curve else 'plaintext'}: {kb:6.2f} KB of RSS "
                  f"per queued {args.bytes}-byte message ({args.messages} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
