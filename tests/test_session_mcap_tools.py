"""Sessions as standard tools read them, checked with the ``mcap`` package's own reader (not armtwin's loader):
wall-clock log times, 1 kHz foxglove.JointStates channels, the clock mapping recorded, older files still load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mcap.reader import make_reader

from tests.conftest import REPO, synthetic_session
from twin.session import MEASURED_TOPIC, TWIN_TOPIC, Session, load_session, write_session


def tracked() -> Session:
    s = synthetic_session(2.0, joints=3)
    s.t_us = s.t_us + 5_000_000  # device clocks do not start at 0
    s.qhat = np.roll(s.q, 10, axis=0)
    s.qhat[:100] = np.nan
    s.sent = np.arange(len(s.t_us)) % 20 == 0
    return s


def test_standard_reader_sees_wall_clock_joint_states_per_sample(tmp_path: Path) -> None:
    s, path = tracked(), tmp_path / "s.mcap"
    before = time.time_ns()
    write_session(path, s)
    after = time.time_ns()
    with open(path, "rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary is not None
        schemas = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
        assert schemas[MEASURED_TOPIC] == schemas[TWIN_TOPIC] == "foxglove.JointStates"
        clock = {m.name: m.metadata for m in reader.iter_metadata()}["clock"]
        per_topic: dict[str, list[tuple[int, dict]]] = {}
        for _schema, channel, message in reader.iter_messages(log_time_order=False):
            per_topic.setdefault(channel.topic, []).append((message.log_time, json.loads(message.data)))
    measured, twin = per_topic[MEASURED_TOPIC], per_topic[TWIN_TOPIC]
    assert len(measured) == len(s.t_us), "one message per measured sample"
    assert len(twin) == int((~np.isnan(s.qhat).any(axis=1)).sum()), "the twin where it displayed something"
    log = np.array([ns for ns, _ in measured])
    assert np.all(np.diff(log) > 0), "log times strictly increase"
    assert before <= log[0] <= after, "log times are wall-clock UTC ns (not device µs from 0)"
    np.testing.assert_array_equal(log - log[0], (s.t_us - s.t_us[0]) * 1000)
    assert int(json.loads(clock["device_t0_us"])) == s.t_us[0]
    first = measured[0][1]
    assert first["device_t_us"] == s.t_us[0], "the device time stays in every payload"
    assert [j["name"] for j in first["joints"]] == s.joint_names
    np.testing.assert_allclose([j["position"] for j in first["joints"]], s.q[0], atol=1e-6)
    assert first["timestamp"]["sec"] * 10**9 + first["timestamp"]["nsec"] == log[0]
    np.testing.assert_allclose([j["position"] for j in twin[0][1]["joints"]], s.qhat[100], atol=1e-6)
    blocks = [ns for ns, _ in per_topic["/armtwin/samples"]]
    assert blocks[0] == log[0], "sample blocks are stamped on the same clock"


def test_armtwin_still_loads_it_and_keeps_the_mapping_on_rewrite(tmp_path: Path) -> None:
    s, a, b = tracked(), tmp_path / "a.mcap", tmp_path / "b.mcap"
    write_session(a, s)
    got = load_session(a)
    np.testing.assert_array_equal(got.t_us, s.t_us)
    np.testing.assert_allclose(got.q, s.q, atol=1e-6)
    write_session(b, got)
    assert load_session(b).meta["clock"] == got.meta["clock"], "rewriting keeps the log times"


def test_sessions_written_before_still_load() -> None:
    old = load_session(REPO / "data" / "sessions" / "default.mcap")  # device µs log times, no JointStates
    assert old.joints == 7 and len(old.t_us) == 30_000 and "clock" not in old.meta
