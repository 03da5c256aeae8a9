"""What a new user meets first: wrong ports, endpoints without tcp://, a replay that ends, no server, misspelt
policy keys, and every frame accounted for. Each test ran red before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device.policies.base import PolicySpecError
from device.policies.registry import parse_policy
from tests.conftest import REPO, Proc, synthetic_session
from twin.endpoints import EndpointError, endpoint
from twin.session import write_session


def _armtwin(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "armtwin", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(("port", "says"), [
    ("/dev/null", "not a serial device"),
    ("README.md", "regular file, not a serial device; to replay a recording run 'armtwin mock-arm"),
    ("docs", "is a directory, not a serial device"),
])
def test_a_port_that_can_never_be_the_arm_is_refused_at_once(port: str, says: str) -> None:
    res = _armtwin("device", "--port", port, "--server", "tcp://127.0.0.1:9", "--duration", "30")
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_missing_port_is_waited_for_within_the_duration() -> None:
    res = _armtwin("device", "--port", "/dev/ttyNOPE", "--server", "tcp://127.0.0.1:9", "--duration", "1.5")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "/dev/ttyNOPE does not exist (yet): waiting for it to appear" in res.stderr
    assert "waiting for frames on /dev/ttyNOPE: cannot open serial port" in res.stdout
    assert "no frames from /dev/ttyNOPE within --duration 1.5 s" in res.stdout
    assert "error: no samples received from /dev/ttyNOPE" in res.stderr


def test_endpoints_accept_host_port_and_say_the_form() -> None:
    assert endpoint("localhost:5555") == "tcp://localhost:5555"
    assert endpoint("5555") == "tcp://127.0.0.1:5555" and endpoint(":5555", bind=True) == "tcp://*:5555"
    assert endpoint("localhost:5555", bind=True) == "tcp://127.0.0.1:5555"  # ZeroMQ binds addresses, not names
    assert endpoint("tcp://10.0.0.2:5555") == "tcp://10.0.0.2:5555" and endpoint("ipc:///tmp/x") == "ipc:///tmp/x"
    for bad in ("localhost", "tcp://host:99999", "udp://x:1", "host:*", ""):
        with pytest.raises(EndpointError, match="tcp://HOST:PORT"):
            endpoint(bad)


def test_server_binds_host_port_and_names_a_port_in_use(procs: list[Proc]) -> None:
    srv = Proc("server", "--bind", "localhost:*", "--pub", "none")
    procs.append(srv)
    bound = srv.value("bind")
    assert bound.startswith("tcp://127.0.0.1:")
    res = _armtwin("server", "--bind", bound.removeprefix("tcp://"), "--pub", "none")
    assert res.returncode == 2 and "the port is in use" in res.stderr and "Traceback" not in res.stderr
    res = _armtwin("server", "--bind", "localhost", "--pub", "none")
    assert res.returncode == 2 and "expected tcp://HOST:PORT" in res.stderr


@pytest.fixture
def short_replay(tmp_path: Path) -> Path:
    path = tmp_path / "short.mcap"
    write_session(path, synthetic_session(seconds=2.0))
    return path


def _mock_arm_frames(arm: Proc) -> int:
    _, _, err = arm.finish(timeout=30)
    line = next(x for x in err.splitlines() if x.startswith("mock arm done:"))
    fields = dict(kv.split("=") for kv in line.split(": ", 1)[1].split())
    assert fields["frames_dropped"] == "0" and fields["unread_bytes"] == "0", line
    return int(fields["frames_sent"])


def test_a_replay_that_ends_ends_the_run_and_every_frame_is_recorded(procs: list[Proc], short_replay: Path,
                                                                     tmp_path: Path) -> None:
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none")
    procs.append(srv)
    arm = Proc("mock-arm", str(short_replay))
    procs.append(arm)
    summ = tmp_path / "s.json"
    # No --duration, a server given as HOST:PORT: the run ends when the replay does, with the summary.
    dev = Proc("device", "--port", arm.value("port"), "--server", srv.value("bind").removeprefix("tcp://"),
               "--policy", "dead-reckoning:delta=0.1", "--summary-json", str(summ))
    procs.append(dev)
    code, out, err = dev.finish(timeout=30)
    assert code == 0, err
    assert "run ended: the replay ended" in out and "summary: samples=2000" in out
    summary = json.loads(summ.read_text())
    assert summary["samples"] == _mock_arm_frames(arm) == 2000 and summary["frames_lost"] == 0


def test_nothing_scored_is_a_failure_a_script_can_see(procs: list[Proc], short_replay: Path) -> None:
    arm = Proc("mock-arm", str(short_replay))
    procs.append(arm)
    dev = Proc("device", "--port", arm.value("port"), "--server", "tcp://127.0.0.1:9", "--policy", "static:k=10")
    procs.append(dev)
    code, out, err = dev.finish(timeout=30)
    assert code == 3, out + err
    assert "nothing was scored: no prediction came back from tcp://127.0.0.1:9" in err


def test_policy_keys_are_checked() -> None:
    with pytest.raises(PolicySpecError, match=r"unknown key 'resnd' for dead-reckoning; valid keys: delta, pred"):
        parse_policy("dead-reckoning:delta=0.1,resnd=1")
    with pytest.raises(PolicySpecError, match=r"dead-reckoning needs key 'delta' \(form: dead-reckoning:delta=DEG"):
        parse_policy("dead-reckoning:h=100")
    with pytest.raises(PolicySpecError, match="kc-td3 needs a checkpoint path"):
        parse_policy("kc-td3:online=1")
    with pytest.raises(PolicySpecError, match="'k' given twice"):
        parse_policy("static:k=2,k=3")
    with pytest.raises(PolicySpecError, match=r"unexpected value 'x\.pt' for static"):
        parse_policy("static:x.pt")
    assert parse_policy("dead-reckoning:delta=0.1,resend=1").acks is not None
    res = _armtwin("device", "--port", "/dev/ttyNOPE", "--server", "x:1", "--policy", "static:kk=3")
    assert res.returncode == 2 and "unknown key 'kk' for static; valid keys: k, h, resend" in res.stderr


def test_server_says_who_connects_and_leaves_and_sums_up(procs: list[Proc], short_replay: Path) -> None:
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none", "--status-every", "0.5")
    procs.append(srv)
    arm = Proc("mock-arm", str(short_replay))
    procs.append(arm)
    dev = Proc("device", "--port", arm.value("port"), "--server", srv.value("bind"), "--device-id", "armX",
               "--policy", "static:k=10")
    procs.append(dev)
    assert "3 joints" in srv.wait_line("device armX connected")
    assert "samples/s" in srv.wait_line("status: 1 devices", new=True)
    assert dev.finish(timeout=30)[0] == 0
    srv.p.terminate()
    code, out, _ = srv.finish(timeout=20)
    assert code == 0
    assert "server stopped: " in out and "200 samples answered" in out and "sessions: 1 opened" in out
    assert "{" not in out.split("server stopped:")[1]  # no Python dict for a summary


def test_record_refuses_to_overwrite_and_creates_its_directory(tmp_path: Path) -> None:
    existing = tmp_path / "old.mcap"
    existing.write_bytes(b"precious")
    res = _armtwin("device", "--port", "/dev/ttyNOPE", "--server", "x:1", "--record", str(existing))
    assert res.returncode == 2 and "exists: give another --record path, or --force" in res.stderr
    assert existing.read_bytes() == b"precious"
    blocked = tmp_path / "afile"
    blocked.write_text("x")
    res = _armtwin("device", "--port", "/dev/ttyNOPE", "--server", "x:1", "--record", str(blocked / "s.mcap"))
    assert res.returncode == 2 and "is a file" in res.stderr and "Traceback" not in res.stderr
    res = _armtwin("device", "--port", "/dev/ttyNOPE", "--server", "x:1", "--duration", "0.2",
                   "--record", str(tmp_path / "new" / "dir" / "s.mcap"))
    assert res.returncode == 1 and (tmp_path / "new" / "dir").is_dir()


def _status_line_fields() -> set[str]:
    """Every ``name=`` (and bare flag) the device's status line can print, read from the code that prints it, so a
    field added there without a definition fails the test below."""
    import inspect
    import re

    from device.agent import DeviceAgent

    src = inspect.getsource(DeviceAgent._status_line) + inspect.getsource(DeviceAgent._link_status)
    names = set(re.findall(r'(?:^|[\s"/(])([A-Za-z_]+)=(?:\{|[A-Z]{2})', src))
    return names | set(re.findall(r'" ([A-Z]{3,})"', src))


def test_every_status_field_and_policy_is_defined_where_the_user_reads_them() -> None:
    from device.policies.registry import FAMILIES
    from device.status_fields import STATUS_FIELDS

    fields = _status_line_fields()
    assert {"rate", "load", "rtt", "link", "port", "ESTOP", "REC", "resent", "lam", "mirror_avg_mse"} <= fields
    fields.discard("eps")  # printed as mirror_avg_mse=A/eps=E, defined with it
    assert fields <= set(STATUS_FIELDS), f"status fields without a definition: {fields - set(STATUS_FIELDS)}"
    readme = (REPO / "README.md").read_text()
    para = readme[readme.index("**Reading the device's status line**"):]
    para = para[:para.index("\n\n")]
    help_text = " ".join(_armtwin("device", "--help").stdout.split())
    for name in fields:
        assert f"`{name}" in para, f"README's status-line paragraph does not define {name}"
        assert f"{name} =" in help_text or f"{name}=" in help_text, f"device --help does not define {name}"
    policies = readme[readme.index("Policies (`--policy`):"):]
    policies = policies[:policies.index("Predictors")]
    for family in FAMILIES:  # every --policy kind (td3 was missing) is in README's list
        assert f"`{family}:" in policies or f"`{family}`" in policies, family
