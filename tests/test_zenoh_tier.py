"""The Zenoh upper tier on loopback: two edge servers (one with 2 workers) and global viewers as real Zenoh peers
(explicit listen/connect endpoints, multicast scouting off). Both sites' arms reach a viewer subscribed to
'armtwin/**', a viewer that joins after the arms went quiet gets each arm's latest state from the queryables, and
everything stops cleanly."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import REPO, Proc
from twin.schema import Wire
from twin.security import Security

pytest.importorskip("zenoh")


class Arm:
    def __init__(self, ctx: zmq.Context[Any], endpoint: str, name: str, security: Security, joints: int = 2,
                 urdf: str = "u") -> None:
        self.joints, self.urdf = joints, urdf
        self.sock = ctx.socket(zmq.DEALER)
        security.client_socket(self.sock)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.name, self.wire, self.seq = name, Wire(), 0

    def recv(self) -> dict[str, Any]:
        assert self.sock.poll(10_000), f"no reply for {self.name}"
        return self.wire.decode(self.sock.recv_multipart())

    def hello(self) -> None:
        self.sock.send_multipart(self.wire.encode("hello", dev=self.name, joints=[f"j{i}" for i in range(self.joints)],
                                                  rate_hz=1000.0, urdf=self.urdf, policy="p", ts=0))
        assert self.recv()["type"] == "welcome"

    def samples(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            self.sock.send_multipart(self.wire.encode("sample", seq=self.seq, t=self.seq * 1000,
                                                      q=[0.001 * self.seq, *[-0.2] * (self.joints - 1)], h=5000,
                                                      ts=self.seq))
            assert self.recv()["type"] == "pred"


def _edge(site: str, *extra: str) -> Proc:
    return Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none", "--zenoh", "--site", site,
                "--zenoh-listen", "tcp/127.0.0.1:0", "--status-every", "3600", *extra)


def _listen(proc: Proc) -> str:
    return proc.wait_line("zenoh=", timeout=60).split("listen=")[1]


def _viewer(eps: list[str], *extra: str) -> Proc:
    connect = [a for ep in eps for a in ("--zenoh-connect", ep)]
    return Proc("view", "--text", "--zenoh", "armtwin/**", *connect, "--snapshot-every", "0.2", *extra)


def test_two_sites_reach_a_global_viewer_and_a_late_joiner_gets_the_latest(
        procs: list[Proc], ctx: zmq.Context[Any], device_security: Security) -> None:
    site_a, site_b = _edge("siteA"), _edge("siteB", "--workers", "2")
    procs += [site_a, site_b]
    eps = [_listen(site_a), _listen(site_b)]
    arms = [Arm(ctx, site_a.value("bind"), "arm1", device_security),
            Arm(ctx, site_a.value("bind"), "arm2", device_security),
            Arm(ctx, site_b.value("bind"), "arm1", device_security)]  # the same name at another site
    try:
        for arm in arms:
            arm.hello()
            arm.samples(10)
        viewer = _viewer(eps)
        procs.append(viewer)
        viewer.wait_line("view: mode=text zenoh=armtwin/**", timeout=60)
        for name in ("siteA/arm1", "siteA/arm2", "siteB/arm1"):
            viewer.wait_line(f"arm={name} joints=2", timeout=30)
        # Live: newer samples arrive through the subscriber (the query at start could only give t0 = 10 ms).
        for arm in arms:
            arm.samples(10)
        for name in ("siteA/arm1", "siteA/arm2", "siteB/arm1"):
            viewer.wait_line(f"state arm={name} t0_us=20000", timeout=30, contains="connected=1")
        # A viewer joining now, while every arm is quiet, has them all at once from the queryables.
        late = _viewer(eps, "--duration", "30")
        procs.append(late)
        for name in ("siteA/arm1", "siteA/arm2", "siteB/arm1"):
            assert "first=query" in late.wait_line(f"arm={name} joints=2", timeout=30)
            late.wait_line(f"state arm={name} t0_us=20000", timeout=30, contains="connected=1")
        late.p.send_signal(signal.SIGTERM)
        code, out, err = late.finish(timeout=30)
        assert code == 0 and "arms=3" in out, err
    finally:
        for arm in arms:
            arm.sock.close(linger=0)
    viewer.p.send_signal(signal.SIGINT)
    code, out, err = viewer.finish(timeout=30)
    assert code == 0 and "arms=3" in out and "bad=0" in out, err
    for site, twins in ((site_a, 40), (site_b, 20)):
        site.p.send_signal(signal.SIGTERM)
        code, out, err = site.finish(timeout=60)
        assert code == 0, err
        assert f"zenoh: {twins} twin states" in out and "0 put errors" in out
        assert "queries answered" in out and " 0 queries answered" not in out


def test_the_3d_viewer_shows_arms_from_the_tier(procs: list[Proc], ctx: zmq.Context[Any], device_security: Security,
                                              tmp_path: Path) -> None:
    """The scene path (PyBullet DIRECT, headless snapshots) fed by Zenoh: the arm is named SITE/DEVICE."""
    pytest.importorskip("pybullet")
    edge = _edge("cell7")
    procs.append(edge)
    ep = _listen(edge)
    arm = Arm(ctx, edge.value("bind"), "kuka", device_security, joints=7, urdf="kuka_iiwa/model.urdf")
    try:
        arm.hello()
        arm.samples(3)
        out = tmp_path / "snaps"
        view = Proc("view", "--zenoh", "armtwin/**", "--zenoh-connect", ep, "--headless", "--snapshot-every", "0.5",
                    "--out", str(out), "--width", "160", "--height", "120", "--duration", "60")
        procs.append(view)
        assert view.wait_line("device=", timeout=60).startswith("device=cell7/kuka joints=7")
        snap = view.wait_line("snapshot=", timeout=60).split("=", 1)[1]
        assert snap.endswith("_cell7_kuka.png") and Path(snap).stat().st_size > 0
        view.p.terminate()
        code, stdout, err = view.finish(timeout=30)
        assert code == 0 and "devices=1" in stdout, err
    finally:
        arm.sock.close(linger=0)


def test_bad_zenoh_options_say_what_to_do(procs: list[Proc]) -> None:
    for args, says in ((["server", "--zenoh"], "--zenoh needs --site"),
                       (["server", "--zenoh", "--site", "a/b"], "--site 'a/b'"),
                       (["server", "--site", "x"], "need --zenoh"),
                       (["view", "--zenoh", "armtwin/**", "--sub", "tcp://127.0.0.1:1"], "pick one"),
                       (["view", "--zenoh", "armtwin/***x"], "not a key expression")):
        p = Proc(*args, "--insecure") if args[0] == "server" else Proc(*args)
        procs.append(p)
        code, _, err = p.finish(timeout=60)
        assert code == 2 and says in err and "Traceback" not in err, (args, err)


ROUTER = """
import sys, zenoh
session = zenoh.open(zenoh.Config.from_file(sys.argv[1]))
print("router ready", flush=True)
sys.stdin.read()  # until the test closes our stdin
session.close()
"""


def _certs(d: Path) -> None:
    """A CA and certificates for the router (localhost), an edge server and a viewer (the CNs the ACL names)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
        "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=armtwin-test-ca")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for name, cn in (("router", "localhost"), ("edge", "armtwin-edge"), ("viewer", "armtwin-viewer")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "ext.cnf")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")
def test_the_documented_tls_and_access_control_configs_carry_the_tier(
        tmp_path: Path, procs: list[Proc], ctx: zmq.Context[Any], device_security: Security) -> None:
    """docs/zenoh/*.json5 as shipped (only the certificate directory and the router's address changed): a router
    with mutual TLS and access control, an edge server and a viewer as its clients; a client without a
    certificate gets nothing."""
    _certs(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("router", "edge", "viewer"):
        text = (REPO / "docs" / "zenoh" / f"{name}.json5").read_text()
        text = text.replace("/etc/armtwin/zenoh/", f"{tmp_path}/").replace("tls/0.0.0.0:7447", f"tls/127.0.0.1:{port}")
        (tmp_path / f"{name}.json5").write_text(text.replace("tls/zenoh-router.example:7447", f"tls/localhost:{port}"))
    router = subprocess.Popen([sys.executable, "-c", ROUTER, str(tmp_path / "router.json5")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert router.stdout is not None and router.stdout.readline().strip() == "router ready"
        edge = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none", "--zenoh", "--site", "tls",
                    "--zenoh-config", str(tmp_path / "edge.json5"))
        procs.append(edge)
        arm = Arm(ctx, edge.value("bind", timeout=60), "arm1", device_security)
        try:
            arm.hello()
            arm.samples(5)
            view = Proc("view", "--text", "--zenoh", "armtwin/**", "--zenoh-config", str(tmp_path / "viewer.json5"),
                        "--snapshot-every", "0.2")
            procs.append(view)
            assert "first=query" in view.wait_line("arm=tls/arm1 joints=2", timeout=60)
            arm.samples(5)
            view.wait_line("state arm=tls/arm1 t0_us=10000", timeout=30)
        finally:
            arm.sock.close(linger=0)
        # Without a certificate of the tier's CA nothing arrives (the router refuses the TLS link).
        stranger = Proc("view", "--text", "--zenoh", "armtwin/**", "--zenoh-connect", f"tls/localhost:{port}",
                        "--duration", "3")
        procs.append(stranger)
        code, out, _ = stranger.finish(timeout=60)
        assert code == 3 and "arms=0 msgs=0" in out, out
        for p in (view, edge):
            p.p.send_signal(signal.SIGTERM)
            code, _, err = p.finish(timeout=60)
            assert code == 0, err
    finally:
        assert router.stdin is not None
        router.stdin.close()
        router.wait(timeout=30)
        if router.stdout is not None:
            router.stdout.close()
