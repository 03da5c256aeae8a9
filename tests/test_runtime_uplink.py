"""device.uplink.Uplink against an in-process ZeroMQ ROUTER on loopback TCP (a random port).

The test plays the server: it reads what the uplink sends and writes replies built with ``twin.schema.Wire``.
The uplink takes the time as an argument (``now_us``), so heartbeats, link timeouts, RTTs and emulated link delays
are driven with synthetic times: nothing waits for real time except socket delivery, always under a timeout.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from device.link_emulation import LinkModel, LinkSpec
from device.uplink import HEARTBEAT_US, LINK_TIMEOUT_US, Uplink, reply_t0
from twin.schema import ProtocolError, Wire, prediction_from_wire

TIMEOUT_MS = 5000
T0 = 10_000_000  # synthetic device/host time (µs) the tests start at
HELLO: dict[str, Any] = {"dev": "arm-1", "joints": ["j0", "j1"], "rate_hz": 1000.0, "urdf": "u.urdf",
                         "policy": "static:k=4"}
WIRE = Wire()


class Server:
    """The ROUTER end: receives decoded messages with the sender's identity and replies to it."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.ident: bytes | None = None

    def recv(self) -> dict[str, Any]:
        assert self.sock.poll(TIMEOUT_MS), "nothing reached the server"
        ident, *frames = self.sock.recv_multipart()
        self.ident = ident
        return WIRE.decode(frames)

    def recv_types(self, n: int) -> list[str]:
        return [self.recv()["type"] for _ in range(n)]

    def send(self, msg_type: str, **fields: Any) -> None:
        assert self.ident is not None, "the uplink has not said anything yet"
        self.sock.send_multipart([self.ident, *WIRE.encode(msg_type, **fields)])

    def send_raw(self, *frames: bytes) -> None:
        assert self.ident is not None
        self.sock.send_multipart([self.ident, *frames])


@pytest.fixture
def server(ctx: zmq.Context[Any]) -> Iterator[Server]:
    s = Server(ctx)
    yield s
    s.sock.close(linger=0)


@pytest.fixture
def make_uplink(ctx: zmq.Context[Any], server: Server) -> Iterator[Callable[..., Uplink]]:
    made: list[Uplink] = []

    def make(hello: dict[str, Any] | None = None, link: LinkSpec | None = None, endpoint: str | None = None,
             wait: bool = True) -> Uplink:
        up = Uplink(ctx, endpoint or server.endpoint, hello, link=link)
        made.append(up)
        if wait:  # IMMEDIATE: the socket takes messages only once the TCP connection is up
            assert up.sock.poll(TIMEOUT_MS, zmq.POLLOUT), "uplink never connected"
        return up

    yield make
    for up in made:
        if not up.sock.closed:
            up.close()


def read_replies(up: Uplink, now_us: int) -> list[dict[str, Any]]:
    """Wait for at least one reply on the socket and hand it to the uplink."""
    assert up.sock.poll(TIMEOUT_MS), "no reply reached the uplink"
    return up.poll_replies(now_us)


def pred_msg(seq: int, ts: int, t0: int, pred_seq: int = 1, rx: int = 0) -> dict[str, Any]:
    return {"seq": seq, "ts": ts, "rx": rx, "preds": [[pred_seq, t0, 10_000, 1, [0.0, 0.0], rx]]}


def welcome(up: Uplink, server: Server, now_us: int, **extra: Any) -> None:
    server.send("welcome", dev=HELLO["dev"], srv_us=123, predictor="linear", **extra)
    assert read_replies(up, now_us) == []


def test_set_hello_sends_the_hello_at_once(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, now_us=T0)
    msg = server.recv()
    assert msg["type"] == "hello" and msg["ts"] == T0
    assert {k: msg[k] for k in HELLO} == HELLO
    assert (up.stats.packets_sent, up.stats.control_dropped, up.stats.samples_on_wire) == (1, 0, 0)


def test_without_a_server_sends_are_dropped_and_counted(make_uplink: Callable[..., Uplink],
                                                        ctx: zmq.Context[Any]) -> None:
    # A port nobody listens on: bound but never listening, so it stays refused for the whole test (a ZeroMQ socket
    # closed here unbinds asynchronously, and a connect could still reach it).
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    up = make_uplink(endpoint=f"tcp://127.0.0.1:{port}", wait=False)
    up.set_hello(HELLO, now_us=T0)
    assert not up.send_sample(1, 0, np.zeros(2), 0, T0, 1.0)
    assert (up.stats.control_dropped, up.stats.dropped_packets, up.stats.packets_sent) == (1, 1, 0)
    assert not up.in_flight() and not up.link_up
    held.close()


def test_welcome_sets_server_fields_and_ends_the_hellos(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink(hello=HELLO)
    up.tick(T0)  # hello pending: every heartbeat repeats it until a welcome comes
    assert server.recv_types(2) == ["hello", "hb"]
    assert not up.welcomed and not up.link_up
    server.send("welcome", dev="arm-1", srv_us=5, predictor="quadratic", derivatives=True)
    assert read_replies(up, T0 + 700) == []  # not a prediction
    assert up.welcomed and up.link_up
    assert up.server_wants_derivatives is True and up.server_predictor == "quadratic"
    assert up.stats.replies == 1
    up.tick(T0 + HEARTBEAT_US)
    assert server.recv()["type"] == "hb"  # a hello would have come first (one connection keeps the order)


def test_welcome_without_derivatives_flag(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    server.send("welcome", dev="arm-1", srv_us=5, predictor="hold")
    read_replies(up, T0)
    assert up.welcomed and up.server_wants_derivatives is False and up.server_predictor == "hold"


def test_link_goes_down_after_the_timeout_and_the_device_says_hello_again(
        make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink(hello=HELLO)
    up.tick(T0)
    assert server.recv_types(2) == ["hello", "hb"]
    t_reply = T0 + 1000
    welcome(up, server, t_reply)
    assert up.link_up
    up.tick(t_reply + LINK_TIMEOUT_US)  # exactly the timeout: still up (a heartbeat goes out)
    assert up.link_up and up.stats.link_downs == 0
    up.tick(t_reply + LINK_TIMEOUT_US + 1)  # one µs more without a reply: down
    assert not up.link_up and up.stats.link_downs == 1
    up.tick(t_reply + LINK_TIMEOUT_US + 1 + HEARTBEAT_US)  # next heartbeat re-announces the arm
    assert server.recv_types(3) == ["hb", "hello", "hb"]
    server.send("pong", ts=t_reply, rx=0, srv_us=0)
    read_replies(up, t_reply + LINK_TIMEOUT_US + 2 + HEARTBEAT_US)
    assert up.link_up and up.stats.link_downs == 1


def test_pong_sets_the_clock_offset_by_the_ntp_formula(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    t1, t2, t3, t4 = T0, 5_000_300_000, 5_000_300_400, T0 + 1000  # sent, server rx, server tx, back
    server.send("pong", ts=t1, rx=t2, srv_us=t3)
    read_replies(up, t4)
    # ((t2 - t1) + (t3 - t4)) / 2: the 400 µs the server held the heartbeat do not bias it.
    assert up.server_offset_us == ((t2 - t1) + (t3 - t4)) // 2 == 4_990_299_700
    assert list(up.rtts_us) == [1000]
    # A slower exchange (900 µs network delay > 600 µs) does not replace the best estimate...
    server.send("pong", ts=T0 + 10_000, rx=5_000_310_000, srv_us=5_000_310_100)
    read_replies(up, T0 + 11_000)
    assert up.server_offset_us == 4_990_299_700
    # ... a faster one (300 µs) does.
    server.send("pong", ts=T0 + 20_000, rx=5_000_320_200, srv_us=5_000_320_300)
    read_replies(up, T0 + 20_400)
    assert up.server_offset_us == ((5_000_320_200 - (T0 + 20_000)) + (5_000_320_300 - (T0 + 20_400))) // 2
    assert list(up.rtts_us) == [1000, 1000, 400]


def test_pong_without_rx_uses_srv_us_for_both_stamps(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    server.send("pong", ts=T0, srv_us=7_000_000)
    read_replies(up, T0 + 2000)
    assert up.server_offset_us == ((7_000_000 - T0) + (7_000_000 - (T0 + 2000))) // 2


def test_send_sample_carries_ack_and_derivatives(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    assert up.send_sample(7, 5000, np.array([0.1, -0.2]), 20_000, T0, 4.0, acked=3)
    msg = server.recv()
    assert msg["type"] == "sample"
    assert (msg["seq"], msg["t"], msg["q"], msg["h"], msg["ts"], msg["k"], msg["a"]) == (
        7, 5000, [0.1, -0.2], 20_000, T0, 4.0, 3)
    assert "d" not in msg
    assert up.send_sample(8, 6000, np.array([0.1, -0.2]), 0, T0 + 1, 4.0, acked=0)  # 0 is an ack too
    assert server.recv()["a"] == 0
    deriv = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert up.send_sample(9, 7000, np.array([0.1, -0.2]), 0, T0 + 2, 4.0, deriv=deriv)
    msg = server.recv()
    assert "a" not in msg and msg["d"] == [1.0, 2.0, 3.0, 4.0]
    assert up.stats.samples_on_wire == 3 and up.stats.packets_sent == 3


def test_in_flight_until_the_reply_of_every_sample_is_read(make_uplink: Callable[..., Uplink],
                                                            server: Server) -> None:
    up = make_uplink()
    assert not up.in_flight()
    up.send_sample(1, 5000, np.zeros(2), 0, T0, 1.0)
    up.send_sample(2, 6000, np.zeros(2), 0, T0 + 1000, 1.0)
    assert up.in_flight()
    server.recv_types(2)
    server.send("pong", ts=T0, srv_us=0)  # not an answer to a sample
    server.send("pred", **pred_msg(1, T0, 5000, pred_seq=1))
    got = read_replies(up, T0 + 1500)
    while up.stats.replies < 2:
        got += read_replies(up, T0 + 1500)
    assert [reply_t0(m) for m in got] == [5000]
    assert up.in_flight()  # sample 2 is still unanswered
    server.send("pred", **pred_msg(2, T0 + 1000, 6000, pred_seq=2))
    got = read_replies(up, T0 + 2600)
    assert [reply_t0(m) for m in got] == [6000]
    assert not up.in_flight()
    assert up.stats.pred_replies == up.stats.samples_on_wire == 2
    assert list(up.rtts_us)[-2:] == [1500, 1600]  # now - the sample's send time


def test_bad_replies_are_counted_and_skipped(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    server.send_raw(b"\xc1 not msgpack")
    server.send("pong", ts=T0, srv_us=0)
    got: list[dict[str, Any]] = []
    while up.stats.replies + up.stats.bad_replies < 2:
        got += read_replies(up, T0 + 10)
    assert got == [] and up.stats.bad_replies == 1 and up.stats.bad_reasons == {"malformed": 1}
    assert up.stats.replies == 1 and up.link_up  # the good one still counts


def test_no_session_error_makes_the_device_say_hello_again(make_uplink: Callable[..., Uplink],
                                                           server: Server) -> None:
    up = make_uplink(hello=HELLO)
    up.tick(T0)
    server.recv_types(2)
    welcome(up, server, T0 + 100)
    up.tick(T0 + HEARTBEAT_US)
    assert server.recv_types(1) == ["hb"]
    server.send("error", code="no-session", msg="send hello first")  # e.g. the server restarted
    read_replies(up, T0 + HEARTBEAT_US + 100)
    assert up.stats.errors_from_server == 1
    up.tick(T0 + 2 * HEARTBEAT_US)
    assert server.recv_types(2) == ["hello", "hb"]


def test_close_says_bye_when_the_link_is_up(make_uplink: Callable[..., Uplink], server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    welcome(up, server, T0)
    up.close()
    assert server.recv()["type"] == "bye"
    assert up.sock.closed


def test_link_emulation_holds_messages_until_their_release_time(make_uplink: Callable[..., Uplink],
                                                                server: Server) -> None:
    up = make_uplink(link=LinkSpec(delay_ms=5.0))
    up.set_hello(HELLO, T0)  # control messages take the constant delay too
    assert up.next_release_us() == T0 + 5000 and up.stats.packets_sent == 0
    up.flush_due(T0 + 4999)
    assert up.stats.packets_sent == 0
    up.flush_due(T0 + 5000)
    assert up.stats.packets_sent == 1 and server.recv()["type"] == "hello"
    assert up.next_release_us() is None and not up.in_flight()  # a hello is not a sample in flight

    t_send = T0 + 10_000
    assert up.send_sample(1, 9000, np.zeros(2), 0, t_send, 1.0)
    assert up.in_flight() and up.stats.samples_on_wire == 0
    assert up.next_release_us() == t_send + 5000
    up.flush_due(t_send + 4999)
    assert up.stats.samples_on_wire == 0
    up.flush_due(t_send + 5000)
    assert up.stats.samples_on_wire == 1
    msg = server.recv()
    assert msg["type"] == "sample" and msg["ts"] == t_send and msg["t"] == 9000
    assert up.in_flight()  # on the wire, no reply yet

    server.send("pred", **pred_msg(1, t_send, 9000))
    t_back = t_send + 6000
    assert read_replies(up, t_back) == []  # read from the socket, held by the emulated downlink
    assert up.stats.pred_replies == 1 and up.in_flight()
    assert up.next_release_us() == t_back + 5000
    assert up.poll_replies(t_back + 4999) == []
    got = up.poll_replies(t_back + 5000)
    assert [reply_t0(m) for m in got] == [9000]
    assert not up.in_flight() and up.next_release_us() is None
    assert list(up.rtts_us) == [t_back + 5000 - t_send]  # the RTT includes both emulated delays
    assert list(up.release_lateness_us) == [0, 0]


def test_emulated_loss_is_keyed_to_the_sample_both_ways(make_uplink: Callable[..., Uplink], server: Server) -> None:
    spec = LinkSpec(loss=0.5, seed=3)
    t_samples = [100_000 + 1000 * i for i in range(24)]
    # The fates the simulator would draw for these sends (same model, same keys).
    ref = LinkModel(spec)
    keys = ref.keys(t_samples)
    up_lost, _ = ref.up.fates(keys)
    down_lost, _ = ref.down.fates(keys)
    reached = [t for t, lost in zip(t_samples, up_lost, strict=True) if not lost]
    delivered = {t for t, lu, ld in zip(t_samples, up_lost, down_lost, strict=True) if not lu and not ld}
    assert 0 < len(delivered) < len(reached) < len(t_samples)  # the seed exercises both kinds of loss

    up = make_uplink(link=spec)
    up.set_hello(HELLO, T0)
    up.flush_due(T0)  # zero delay: due at once; control messages are never lost
    assert server.recv()["type"] == "hello"
    for i, t in enumerate(t_samples):
        assert up.send_sample(i, t, np.zeros(2), 0, T0, 1.0)  # a lost send still "left the device"
    up.flush_due(T0)
    got_t = [server.recv()["t"] for _ in reached]
    assert got_t == reached
    assert up.stats.emulated_lost_up == len(t_samples) - len(reached)
    assert up.stats.packets_sent == 1 + len(t_samples) and up.stats.samples_on_wire == len(reached)
    # Reply in reverse order: each reply's fate follows the sample it answers, not its place in the order.
    for n, t in enumerate(reversed(reached)):
        server.send("pred", **pred_msg(n, T0, t, pred_seq=n + 1))
    back: list[dict[str, Any]] = []
    while up.stats.pred_replies < len(reached):
        back += read_replies(up, T0 + 1000)
    assert {reply_t0(m) for m in back} == delivered
    assert up.stats.emulated_lost_down == len(reached) - len(delivered)
    assert not up.in_flight()


def test_reply_t0_is_the_newest_prediction_t0() -> None:
    assert reply_t0({"preds": [[1, 100, 0, 1, [0.0]], [2, 250, 0, 1, [0.0]]]}) == 250
    assert reply_t0({"preds": []}) == -1
    assert reply_t0({}) == -1


# -- a hostile or broken server (issue 10, defect 9) ------------------------------------------------------------
GOOD_ITEM = [1, 0, 10_000, 1, [0.0, 0.0], 0]
ODD_REPLIES: list[tuple[str, dict[str, Any]]] = [
    ("bad-pred", {"preds": [["x", 0, 10_000, 1, [0.0, 0.0], 0]]}),  # non-integer prediction sequence number
    ("bad-pred", {"preds": [[1.5, 0, 10_000, 1, [0.0, 0.0], 0]]}),
    ("bad-pred", {"preds": [[True, 0, 10_000, 1, [0.0, 0.0], 0]]}),
    ("bad-pred", {"preds": [[0, 0, 10_000, 1, [0.0, 0.0], 0]]}),
    ("bad-pred", {"preds": [[1, "0", 10_000, 1, [0.0, 0.0], 0]]}),
    ("bad-pred", {"preds": [[1, 0, -5, 1, [0.0, 0.0], 0]]}),
    ("bad-pred", {"preds": [[1, 0, 10_000, 9, [0.0, 0.0], 0]]}),
    ("bad-pred", {"preds": [[1, 0, 10_000, 2, [0.0, 0.0, 0.0], 0]]}),  # 3 coefficients, degree+1 = 2
    ("bad-pred", {"preds": [[1, 0, 10_000, 1, [0.0, 0.0], 1.5]]}),
    ("bad-pred", {"preds": [[1, 0]]}),
    ("bad-pred", {"preds": [{"seq": 1}]}),
    ("bad-pred", {"preds": []}),
    ("non-finite", {"preds": [[1, 0, 10_000, 1, [float("nan"), 0.0], 0]]}),
    ("non-finite", {"preds": [[1, 0, 10_000, 1, [0.0, float("inf")], 0]]}),
    ("out-of-range", {"preds": [[1, 0, 10_000, 1, [1e300, 0.0], 0]]}),
    ("bad-field", {"preds": "everything"}),
    ("bad-field", {"preds": [GOOD_ITEM], "rx": "now"}),
    ("bad-field", {"preds": [GOOD_ITEM], "ts": None}),
    ("bad-field", {"preds": [GOOD_ITEM], "epoch": "new"}),
    ("out-of-range", {"preds": [GOOD_ITEM], "rx": 2**63}),
]


@pytest.mark.parametrize(("reason", "fields"), ODD_REPLIES)
def test_odd_prediction_replies_are_counted_by_reason(make_uplink: Callable[..., Uplink], server: Server,
                                                      reason: str, fields: dict[str, Any]) -> None:
    """Well-formed msgpack, wrong content: dropped and counted by reason, never raised (it used to end the run)."""
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    server.send("pred", **{"seq": 1, "ts": T0, "rx": 0, **fields})
    server.send("pong", ts=T0, srv_us=0)  # one connection keeps order: the reply was handled before this
    assert read_replies(up, T0 + 100) == []
    assert up.stats.bad_reasons == {reason: 1} and up.stats.bad_replies == 1 and up.stats.pred_replies == 0


@pytest.mark.parametrize("raw", [b"\xc1", b"\x91" * 5000 + b"\x00", b"\x93\x01\x02\x03"])
def test_garbage_and_wrong_kinds_from_the_server_are_counted(make_uplink: Callable[..., Uplink], server: Server,
                                                             raw: bytes) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    server.send_raw(raw)
    server.send("sample", seq=1, t=0, q=[0.0], h=0, ts=0)  # a kind only devices send
    server.send("pong", ts=T0, srv_us=0)
    read_replies(up, T0 + 100)
    assert up.stats.bad_reasons == {"malformed": 1, "unexpected": 1}


def test_a_prediction_for_another_joint_count_is_refused_with_a_protocol_error() -> None:
    """The agent checks the joint count itself: prediction_from_wire raises only ProtocolError (counted)."""
    with pytest.raises(ProtocolError, match="joints") as exc:
        prediction_from_wire([1, 0, 10_000, 1, [0.0, 0.0, 0.0], 0], joints=2)
    assert exc.value.reason == "bad-pred"


@pytest.mark.parametrize(("h_us", "flat"), [(0, [1e12, 0.0]), (10_000_000, [0.0, 0.0, 0.0, 2e3]),
                                             (60_000_000, [0.0, 0.0, 0.0, 0.0, 0.0, 3.0])])
def test_a_prediction_that_leaves_every_pose_within_its_horizon_is_refused(h_us: int, flat: list[float]) -> None:
    """Coefficients within the wire's limit can still put the twin at 1e12 rad (a constant) or 2e4 rad after 10 s
    (a velocity): displayed, scored and recorded as the arm's pose if let through."""
    with pytest.raises(ProtocolError, match="reaches") as exc:
        prediction_from_wire([1, 0, h_us, len(flat) // 2, flat, 0], joints=2)
    assert exc.value.reason == "out-of-range"
    _, ok = prediction_from_wire([1, 0, 20_000, 2, [0.5, -0.5, 3.0, -3.0], 0], joints=2)  # 3 rad/s for 20 ms
    assert ok.coeffs.shape == (2, 2)


# -- session epochs (issue 10, defect 3) ----------------------------------------------------------------------
def pred_epoch(pred_seq: int, epoch: int, t0: int) -> dict[str, Any]:
    return {"seq": pred_seq, "ts": T0, "rx": 0, "epoch": epoch, "preds": [[pred_seq, t0, 10_000, 1, [0.0, 0.0], 0]]}


def test_a_new_session_epoch_continues_the_device_numbering(make_uplink: Callable[..., Uplink],
                                                            server: Server) -> None:
    """A restarted server numbers from 1 again; the uplink places the new epoch after the old one and translates
    the device's acknowledgement into the new session's numbers."""
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    welcome(up, server, T0, epoch=111)
    for n in (1, 2, 3):
        server.send("pred", **pred_epoch(n, 111, n * 1000))
    got = [m["preds"][0][0] for m in read_all(up, 3)]
    assert got == [1, 2, 3]
    welcome(up, server, T0, epoch=222)  # the server restarted
    server.send("pred", **pred_epoch(1, 222, 4000))
    server.send("pred", **pred_epoch(2, 222, 5000))
    assert [m["preds"][0][0] for m in read_all(up, 2)] == [4, 5]
    assert up.stats.epochs == 2
    up.send_sample(9, 6000, np.zeros(2), 0, T0, 1.0, acked=4)  # device-wide 4 = the new session's 1
    assert server.recv()["a"] == 1
    up.send_sample(10, 7000, np.zeros(2), 0, T0, 1.0, acked=3)  # nothing of the new session yet
    assert server.recv()["a"] == 0


def test_a_reply_of_a_session_whose_welcome_was_lost_opens_its_epoch(make_uplink: Callable[..., Uplink],
                                                                     server: Server) -> None:
    up = make_uplink()
    up.set_hello(HELLO, T0)
    server.recv()
    welcome(up, server, T0, epoch=1)
    server.send("pred", **pred_epoch(7, 1, 1000))
    server.send("pred", **pred_epoch(1, 2, 2000))  # epoch 2's welcome never came
    assert [m["preds"][0][0] for m in read_all(up, 2)] == [7, 8]


def read_all(up: Uplink, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out += read_replies(up, T0 + 100)
    return out
