"""Constants shared by device, server and lab: one home, so the two ends of the link cannot disagree."""

from __future__ import annotations

# Joints per sample on the network (schema); the serial frame protocol has the same limit
# (firmware_interfaces.codec.MAX_JOINTS, pinned equal by tests/test_layout.py).
MAX_JOINTS = 32
# Each server reply repeats the last REDUNDANCY predictions, so one lost reply does not blind the device.
REDUNDANCY = 3
# ... and every prediction newer than the one the device acknowledges in its samples (``a``: the highest pred_seq
# up to which it has them all), at most REPEAT_MAX: a prediction whose replies were all lost still reaches the
# device, so what it scores is what the twin displayed.
REPEAT_MAX = 16
# Serial decode + uplink + server processing on the nominal path (µs): what the simulator adds to the link
# delay, and what KC-TD3 subtracts from RTT/2 to get the one-way delay of its λ grid.
PIPELINE_LATENCY_US = 500
# The arm announced when none is given: the KUKA iiwa URDF shipped in pybullet_data.
DEFAULT_URDF = "kuka_iiwa/model.urdf"
