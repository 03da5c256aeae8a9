"""armtwin: keep a digital twin of a robot arm in sync over a network (docs/api.md shows the Python use).

The public surface, imported on first use so ``import armtwin`` (and the ``armtwin`` command) stays light:

* ``DeviceAgent``, ``DeviceConfig``, ``parse_policy``: the device agent as ``armtwin device`` runs it;
* ``SampleSource``: feed joint samples from a program (vendor SDK, ROS 2 bridge) instead of serial frames;
* ``TwinServer``: the twin server (``serve_forever`` in a thread, ``stop``);
* ``simulate``: the offline simulator on a session (needs ``armtwin[lab]``);
* ``load_session``, ``write_session``, ``Session``: session files;
* ``MockArm``: a pty streaming recorded samples as firmware frames.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "DeviceAgent": "device.agent",
    "DeviceConfig": "device.agent",
    "parse_policy": "device.policies.registry",
    "SampleSource": "device.sample_source",
    "TwinServer": "server.twin_server",
    "simulate": "lab.simulator",
    "load_session": "twin.session",
    "write_session": "twin.session",
    "Session": "twin.session",
    "MockArm": "firmware_interfaces.mock_arm",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'armtwin' has no attribute {name!r}")
