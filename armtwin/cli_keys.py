"""``armtwin keys``: make and manage the CURVE certificates the server, devices and viewers use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_CLIENTS = ["device", "viewer"]


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="create and manage CURVE keys (server certificate, client certificates, authorised keys)",
        description="ZeroMQ CURVE keys for armtwin. `init DIR` writes the server's certificate (DIR/server.key "
        "and DIR/server.key_secret), one certificate per client (DIR/clients/NAME.key, NAME.key_secret) and "
        "authorises each client (DIR/authorized/NAME.key). The server (--keys DIR) admits only the public keys "
        "in DIR/authorized/; a running server re-reads that directory within a second.",
        epilog="what goes where:\n"
        "  edge PC (server):    DIR/server.key_secret, DIR/server.key, DIR/authorized/\n"
        "  arm controller:      DIR/server.key, DIR/clients/device.key_secret   (armtwin device --keys DIR)\n"
        "  viewer desk:         DIR/server.key, DIR/clients/viewer.key_secret   (armtwin view --keys DIR)\n"
        "never copy server.key_secret off the edge PC.\n\n"
        "examples:\n  armtwin keys init keys\n  armtwin keys init keys --client arm1 --client arm2 --client viewer\n"
        "  armtwin keys add keys arm3        # a new client (copy keys/clients/arm3.key_secret to it)\n"
        "  armtwin keys revoke keys arm1     # refused from now on (open connections: restart the server)\n"
        "  armtwin keys list keys",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="keys_verb", metavar="ACTION")
    init = verbs.add_parser("init", help="create a key directory (server + clients)")
    init.add_argument("dir", type=Path)
    init.add_argument("--client", action="append", metavar="NAME",
                      help=f"a client certificate to create, repeatable (default: {', '.join(DEFAULT_CLIENTS)})")
    init.add_argument("--force", action="store_true", help="replace an existing server key (every client then "
                      "needs the new DIR/server.key)")
    add = verbs.add_parser("add", help="create and authorise one more client certificate")
    add.add_argument("dir", type=Path)
    add.add_argument("name")
    revoke = verbs.add_parser("revoke", help="remove a client's public key from DIR/authorized/")
    revoke.add_argument("dir", type=Path)
    revoke.add_argument("name")
    lst = verbs.add_parser("list", help="show the server key and the authorised clients")
    lst.add_argument("dir", type=Path)
    p.set_defaults(run=run, keys_parser=p)


def run(args: argparse.Namespace) -> int:
    from twin.security import SecurityError, add_client, init_keys, revoke_client

    try:
        if args.keys_verb == "init":
            files = init_keys(args.dir, args.client or DEFAULT_CLIENTS, force=args.force)
            for f in files:
                print(f"wrote {f}")
            print(f"server: armtwin server --keys {args.dir}; clients: armtwin device/view --keys {args.dir} "
                  "(--cert NAME picks DIR/clients/NAME.key_secret)")
        elif args.keys_verb == "add":
            for f in add_client(args.dir, args.name):
                print(f"wrote {f}")
        elif args.keys_verb == "revoke":
            print(f"removed {revoke_client(args.dir, args.name)} (new connections with this key are refused; "
                  "restart the server to cut open ones)")
        elif args.keys_verb == "list":
            return _list(args.dir)
        else:
            args.keys_parser.print_help()
            return 2
    except (SecurityError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _list(d: Path) -> int:
    import zmq.auth

    server = d / "server.key"
    if not server.is_file():
        print(f"error: {server} not found: run `armtwin keys init {d}`", file=sys.stderr)
        return 2
    print(f"server public key: {zmq.auth.load_certificate(server)[0].decode()}")
    authorized = sorted((d / "authorized").glob("*.key")) if (d / "authorized").is_dir() else []
    for f in authorized:
        print(f"authorised: {f.stem:16s} {zmq.auth.load_certificate(f)[0].decode()}")
    if not authorized:
        print("authorised: none (no client can connect)")
    return 0
