"""How armtwin's ZeroMQ sockets are secured: CURVE by default ("Ironhouse"), plaintext only when asked for.

CURVE (``zmq.auth``) encrypts and authenticates every message. The server holds its own certificate and a
directory of *authorised* client public keys; its ZAP handler admits a connection only if the client's public
key is in that directory, on the device ROUTER and the viewer PUB alike. Devices and viewers hold their own
certificate and the server's public key. A message captured on one connection cannot be replayed on another:
it is encrypted for that connection's short-term keys (and CURVE's nonces stop a replay on the same one).

A key directory made by ``armtwin keys init DIR`` looks like this (copy to each machine only what it needs)::

    DIR/server.key, DIR/server.key_secret      the server's certificate (the secret stays on the edge PC)
    DIR/clients/NAME.key, NAME.key_secret      one certificate per client (device, viewer, ...)
    DIR/authorized/NAME.key                    public keys the server admits (delete one to revoke it)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS_ENV = "ARMTWIN_KEYS"  # default for --keys
INSECURE_WARNING = ("warning: --insecure: plaintext ZeroMQ with no authentication: anyone who can reach this "
                    "port can read the arm's motion, inject samples and open or end sessions. Use it only on a "
                    "trusted network; `armtwin keys init DIR` and --keys DIR turn CURVE on.")


class SecurityError(ValueError):
    """Keys missing, unreadable or inconsistent; the message says which file and what to run."""


@dataclass(frozen=True)
class Security:
    """The security of one process's sockets: CURVE with its keys, or plaintext (``insecure``)."""

    curve: bool
    public: bytes = b""  # this process's certificate
    secret: bytes = b""
    server_public: bytes = b""  # clients: the server's public key
    authorized: Path | None = None  # server: directory of admitted client public keys

    @classmethod
    def insecure(cls) -> Security:
        return cls(curve=False)

    @classmethod
    def for_server(cls, keys_dir: str | os.PathLike[str]) -> Security:
        d = Path(keys_dir)
        public, secret = _load(d / "server.key_secret", "the server's secret key")
        authorized = d / "authorized"
        if not authorized.is_dir():
            raise SecurityError(f"{authorized} is missing: run `armtwin keys init {d}` (or mkdir it and put client "
                                "public keys in it)")
        return cls(curve=True, public=public, secret=secret, authorized=authorized)

    @classmethod
    def for_client(cls, keys_dir: str | os.PathLike[str], name: str) -> Security:
        d = Path(keys_dir)
        server_public, _ = _load(d / "server.key", "the server's public key", need_secret=False)
        public, secret = _load(d / "clients" / f"{name}.key_secret", f"client {name!r}'s secret key "
                               f"(make one with `armtwin keys add {d} {name}`)")
        return cls(curve=True, public=public, secret=secret, server_public=server_public)

    @property
    def label(self) -> str:
        return "curve" if self.curve else "insecure (plaintext)"

    def server_socket(self, sock: Any) -> None:
        """Make ``sock`` (ROUTER / PUB) a CURVE server; its connections go through the ZAP handler."""
        if self.curve:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_server = True

    def client_socket(self, sock: Any) -> None:
        """Make ``sock`` (DEALER / SUB) a CURVE client of the server whose public key this holds."""
        if self.curve:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_serverkey = self.server_public

    def start_authenticator(self, ctx: Any) -> Any:
        """Server side: start the ZAP handler admitting only the authorised keys (None when insecure)."""
        if not self.curve:
            return None
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx, log=_quiet_log())
        auth.start()
        self.reload(auth)
        return auth

    def reload(self, auth: Any) -> None:
        """Re-read the authorised keys (added or revoked ones count for new connections)."""
        assert self.authorized is not None
        auth.configure_curve(domain="*", location=str(self.authorized))

    def authorized_stamp(self) -> tuple[int, int]:
        """Changes whenever a key is added to or removed from the authorised directory."""
        if self.authorized is None:
            return 0, 0
        try:
            st = self.authorized.stat()
            return st.st_mtime_ns, len(os.listdir(self.authorized))
        except OSError:
            return 0, 0


def _quiet_log() -> Any:
    import logging

    log = logging.getLogger("armtwin.zap")
    log.propagate = False  # the server counts refused handshakes itself; no tracebacks in its output
    return log


def _load(path: Path, what: str, need_secret: bool = True) -> tuple[bytes, bytes]:
    import zmq.auth

    if not path.is_file():
        raise SecurityError(f"{path} not found ({what}); create keys with `armtwin keys init DIR`, or run with "
                            "--insecure on a trusted network")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"{path}: not a ZeroMQ certificate ({exc})") from None
    if need_secret and not secret:
        raise SecurityError(f"{path} holds no secret key ({what})")
    return public, secret or b""


def init_keys(keys_dir: str | os.PathLike[str], clients: list[str], force: bool = False) -> list[Path]:
    """Create the server certificate, one certificate per client and the authorised directory; returns the
    files written. Refuses to replace an existing server key unless ``force`` (clients would be locked out)."""
    d = Path(keys_dir)
    if (d / "server.key_secret").exists() and not force:
        raise SecurityError(f"{d} already holds a server key; `armtwin keys add {d} NAME` adds a client, --force "
                            "replaces everything (every client then needs the new server.key)")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    written = [Path(p) for p in _create(d, "server")]
    (d / "authorized").mkdir(exist_ok=True)
    for name in clients:
        written += add_client(d, name, force=True)
    return written


def add_client(keys_dir: str | os.PathLike[str], name: str, force: bool = False) -> list[Path]:
    """A new client certificate in DIR/clients, its public key authorised in DIR/authorized."""
    d = Path(keys_dir)
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise SecurityError(f"client name {name!r}: use letters, digits, '-', '_' and '.'")
    if not (d / "authorized").is_dir():
        raise SecurityError(f"{d}/authorized is missing: run `armtwin keys init {d}` first")
    clients = d / "clients"
    if (clients / f"{name}.key").exists() and not force:
        raise SecurityError(f"client {name!r} exists in {clients}; revoke it first to make a new key")
    clients.mkdir(exist_ok=True)
    public, secret = _create(clients, name)
    shutil.copyfile(public, d / "authorized" / f"{name}.key")
    return [Path(public), Path(secret), d / "authorized" / f"{name}.key"]


def revoke_client(keys_dir: str | os.PathLike[str], name: str) -> Path:
    """Remove ``name``'s public key from the authorised directory (new connections with it are refused)."""
    path = Path(keys_dir) / "authorized" / f"{name}.key"
    if not path.exists():
        raise SecurityError(f"{path} does not exist: no authorised client {name!r}")
    path.unlink()
    return path


def _create(directory: Path, name: str) -> tuple[str, str]:
    import zmq.auth

    public, secret = zmq.auth.create_certificates(directory, name)
    os.chmod(secret, 0o600)
    return public, secret


def security_from_args(args: Any, role: str, client_name: str = "device") -> Security:
    """The ``--keys DIR`` / ``--insecure`` pair every networked verb takes (``role``: server or client); prints
    the plaintext warning. Raises SecurityError with what to do when neither is given."""
    import sys

    if getattr(args, "insecure", False):
        print(INSECURE_WARNING, file=sys.stderr, flush=True)
        return Security.insecure()
    keys = args.keys or os.environ.get(KEYS_ENV)
    if not keys:
        raise SecurityError(f"no keys: give --keys DIR (create it with `armtwin keys init DIR`; ${KEYS_ENV} sets a "
                            "default), or --insecure for plaintext on a trusted network")
    if role == "server":
        return Security.for_server(keys)
    return Security.for_client(keys, getattr(args, "cert", None) or client_name)


def add_security_args(p: Any, role: str, client_name: str = "device") -> None:
    """Add --keys / --insecure (and --cert NAME for clients) to a verb's parser."""
    if role == "server":
        what = "DIR/server.key_secret and the client public keys in DIR/authorized/ (only those connect)"
    else:
        what = f"DIR/server.key (the server's public key) and DIR/clients/NAME.key_secret (default NAME {client_name})"
        p.add_argument("--cert", metavar="NAME", default=None,
                       help=f"which client certificate in DIR/clients/ to use (default {client_name})")
    p.add_argument("--keys", metavar="DIR", default=None,
                   help=f"CURVE keys made by `armtwin keys init DIR`: uses {what}; default ${KEYS_ENV}")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext, unauthenticated ZeroMQ (prints a warning): only on a trusted network")
