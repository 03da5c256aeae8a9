"""``armtwin server``: run the twin server until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from twin.predictors import DEFAULT_PREDICTOR
from twin.security import add_security_args


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="run the twin server (ROUTER for devices, PUB for viewers)",
        description="Accept devices on a ZeroMQ ROUTER socket, predict each arm's trajectory, reply with "
        "predictions and publish twin states on PUB. Prints 'bind=<endpoint>' and 'pub=<endpoint>' first "
        "(useful with port '*' for a random port). CURVE-encrypted by default: only clients whose public keys are "
        "in --keys DIR/authorized/ get a session or twin data.",
        epilog="examples:\n  armtwin keys init keys && armtwin server --keys keys\n"
        "  armtwin server --keys keys --bind tcp://127.0.0.1:* --pub tcp://127.0.0.1:* --predictor quadratic\n"
        "  armtwin server --insecure   (plaintext: a trusted network only; warns)\n\n"
        "exit status: 0 = stopped by Ctrl-C/SIGTERM; 2 = bad arguments, keys missing, or the port is taken",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bind", default="tcp://*:5555", help="ROUTER endpoint for devices (default tcp://*:5555)")
    p.add_argument("--pub", default="tcp://*:5556", help="PUB endpoint for viewers; 'none' disables")
    p.add_argument("--predictor", default=DEFAULT_PREDICTOR,
                   help="predictor: hold, linear, quadratic, kinematic, learned:MODEL.npz "
                   f"(default {DEFAULT_PREDICTOR})")
    p.add_argument("--key-env", default="ARMTWIN_KEY", metavar="VAR",
                   help="environment variable holding a shared HMAC key: every message also carries an HMAC "
                   "(defence in depth; CURVE already authenticates each message)")
    add_security_args(p, "server")
    p.add_argument("--status-every", type=float, default=10.0, metavar="S",
                   help="print a status line (devices, samples/s, drops by reason) every S s (default 10)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="session worker processes (default 1: one process). With N > 1 a front process keeps the "
                   "one --bind/--pub endpoint and the keys, and each device's session lives in worker "
                   "hash(identity) %% N: use N = the cores to spare")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import errno

    import zmq

    from server.front import ShardedServer
    from server.twin_server import TwinServer
    from twin.endpoints import EndpointError, endpoint
    from twin.security import security_from_args

    key = os.environ.get(args.key_env)
    bind, pub = args.bind, args.pub
    try:
        security = security_from_args(args, "server")
        bind = endpoint(args.bind, bind=True)
        pub = None if args.pub == "none" else endpoint(args.pub, bind=True)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1 (got {args.workers})")
        log = lambda line: print(line, flush=True)  # noqa: E731
        if args.workers > 1:
            srv: TwinServer | ShardedServer = ShardedServer(
                bind, pub, args.workers, args.predictor, key.encode() if key else None, log=log,
                status_every_s=args.status_every, security=security)
        else:
            srv = TwinServer(bind, pub, args.predictor, key.encode() if key else None, log=log,
                             status_every_s=args.status_every, security=security)
    except (EndpointError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        busy = " (the port is in use: another server running? pick another with --bind/--pub)" \
            if exc.errno == errno.EADDRINUSE else ""
        print(f"error: cannot bind {bind} / {pub or 'no PUB'}: {exc}{busy}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: srv.stop())
    print(f"bind={srv.endpoint}", flush=True)
    print(f"pub={srv.pub_endpoint or 'none'}", flush=True)
    print(f"predictor={args.predictor}", flush=True)
    print(f"security={security.label}", flush=True)
    if isinstance(srv, ShardedServer):
        print(f"workers={args.workers} pids={','.join(map(str, srv.worker_pids))}", flush=True)
    srv.serve_forever()
    for line in srv.summary_lines():
        print(line, flush=True)
    return 0
