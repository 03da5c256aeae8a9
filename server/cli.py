"""``armtwin server``: run the twin server until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twin.predictors import DEFAULT_PREDICTOR
from twin.security import add_security_args
from twin.stop_signals import stop_on_signals


def add_zenoh_args(group: Any) -> None:
    """--zenoh-config / --zenoh-connect / --zenoh-listen (shared with ``armtwin view --zenoh``)."""
    group.add_argument("--zenoh-config", default=None, metavar="FILE",
                       help="a Zenoh JSON5 config (mode, router endpoints, TLS, access control; see "
                       "docs/zenoh/). Without it: a peer")
    group.add_argument("--zenoh-connect", action="append", default=[], metavar="EP",
                       help="Zenoh endpoint to connect to, e.g. tcp/router-host:7447 (repeatable)")
    group.add_argument("--zenoh-listen", action="append", default=[], metavar="EP",
                       help="Zenoh endpoint to listen on, e.g. tcp/0.0.0.0:7448 (port 0 = a free one; repeatable)."
                       " Explicit endpoints without a config file turn multicast scouting off")


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
        "  armtwin server --keys keys --workers 2   (sessions over 2 processes, one endpoint)\n"
        "  armtwin server --keys keys --zenoh --site plant1 --zenoh-connect tcp/router-host:7447\n"
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
    p.add_argument("--max-sessions", type=int, default=None, metavar="N",
                   help="devices one server holds at once (default: server.twin_server.MAX_SESSIONS, 256); a hello "
                   "beyond them gets 'server-full'")
    p.add_argument("--status-every", type=float, default=10.0, metavar="S",
                   help="print a status line (devices, samples/s, drops by reason) every S s (default 10)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="session worker processes (default 1: one process). With N > 1 a front process keeps the "
                   "one --bind/--pub endpoint and the keys, and each device's session lives in worker "
                   "hash(identity) %% N: use N = the cores to spare")
    z = p.add_argument_group("upper tier (Eclipse Zenoh; pip install 'armtwin[zenoh]')")
    z.add_argument("--zenoh", action="store_true",
                   help="also publish every arm under armtwin/SITE/DEVICE/twin and .../status, and answer queries "
                   "for the latest state (late joiners: armtwin view --zenoh 'armtwin/**')")
    z.add_argument("--site", default=None, help="this edge server's name in the key expressions (with --zenoh)")
    add_zenoh_args(z)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import errno

    import zmq

    from server.front import ShardedServer
    from server.twin_server import MAX_SESSIONS, TwinServer
    from twin.endpoints import EndpointError, endpoint
    from twin.security import security_from_args

    key = os.environ.get(args.key_env)
    bind, pub = args.bind, args.pub
    tier = None
    try:
        max_sessions = MAX_SESSIONS if args.max_sessions is None else args.max_sessions
        if max_sessions < 1:
            raise ValueError("--max-sessions must be >= 1")
        security = security_from_args(args, "server")
        bind = endpoint(args.bind, bind=True)
        pub = None if args.pub == "none" else endpoint(args.pub, bind=True)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1 (got {args.workers})")
        log = lambda line: print(line, flush=True)  # noqa: E731
        if args.zenoh:
            from server.zenoh_tier import ZenohTier

            if not args.site:
                raise ValueError("--zenoh needs --site NAME (this edge server's name in armtwin/NAME/...)")
            tier = ZenohTier(args.site, args.zenoh_config, args.zenoh_connect, args.zenoh_listen, log)
        elif args.site or args.zenoh_config or args.zenoh_connect or args.zenoh_listen:
            raise ValueError("--site and --zenoh-* need --zenoh")
        if args.workers > 1:
            srv: TwinServer | ShardedServer = ShardedServer(
                bind, pub, args.workers, args.predictor, key.encode() if key else None, log=log,
                status_every_s=args.status_every, security=security, tier=tier, max_sessions=max_sessions)
        else:
            srv = TwinServer(bind, pub, args.predictor, key.encode() if key else None, log=log,
                             status_every_s=args.status_every, security=security, tier=tier,
                             max_sessions=max_sessions)
    except (EndpointError, ValueError, RuntimeError) as exc:
        if tier is not None:
            tier.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except zmq.ZMQError as exc:
        busy = " (the port is in use: another server running? pick another with --bind/--pub)" \
            if exc.errno == errno.EADDRINUSE else ""
        if tier is not None:
            tier.close()
        print(f"error: cannot bind {bind} / {pub or 'no PUB'}: {exc}{busy}", file=sys.stderr)
        return 2
    with stop_on_signals(srv.stop):  # from here a signal stops the loop; the summary still prints
        print(f"bind={srv.endpoint}", flush=True)
        print(f"pub={srv.pub_endpoint or 'none'}", flush=True)
        print(f"predictor={args.predictor}", flush=True)
        print(f"security={security.label}", flush=True)
        if isinstance(srv, ShardedServer):
            print(f"workers={args.workers} pids={','.join(map(str, srv.worker_pids))}", flush=True)
        if tier is not None:
            print(f"zenoh={tier.prefix} listen={','.join(tier.listen) or 'config'}", flush=True)
        srv.serve_forever()
        for line in srv.summary_lines():
            print(line, flush=True)
        if tier is not None:
            print(tier.summary(), flush=True)
    return 0
