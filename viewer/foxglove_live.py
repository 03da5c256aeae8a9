"""The live twin in Foxglove: a Foxglove WebSocket server (``foxglove-sdk``) fed by the twin feed.

Per device ``DEV`` (the ``--device-id``) it publishes, at most ``rate_hz`` times a second whatever the arm's rate:

* ``/DEV/measured/joint_states`` and ``/DEV/twin/joint_states`` (``foxglove.JointStates``, URDF joint names,
  radians): the last sample the server received, and the twin (the newest prediction evaluated now);
* ``/tf`` (``foxglove.FrameTransforms``): every URDF link of both arms under the frame prefixes ``DEV/measured/``
  and ``DEV/twin/``, side by side, so the 3D panel's two URDF layers move;
* ``/DEV/tracking`` (JSON): the gap between twin and measured (max over joints, deg; end effector, mm), the
  device's own MSE/RMSE of what the twin displayed, load, k, H, RTT and link state.

The URDF and its meshes are served through the SDK's asset handler as ``package://armtwin/DEV/<path>`` (paths
relative to the URDF's folder; nothing outside it is served). ``viewer/foxglove_layout.json`` is a layout for the
default device ``arm0``.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.arm_spec import ArmSpec
from viewer.arm import ArmModel, ArmModelError, JointMap, import_pybullet, open_arm, resolve_urdf
from viewer.feed import DeviceView, TwinFeed, local_us

DEFAULT_PORT = 8765
MAX_RATE_HZ = 60.0
SIDE_M = 0.6  # measured arm at y = -SIDE_M/2, twin at +SIDE_M/2
SLOT_M = 1.5  # devices one behind the other along x
TRACKING_SCHEMA = {
    "type": "object",
    "title": "armtwin.Tracking",
    "properties": {
        "gap_deg_max": {"type": "number", "description": "max over joints |twin now - last received sample|, deg"},
        "gap_ee_mm": {"type": "number", "description": "end-effector distance twin now - last received sample, mm"},
        "mse_deg2": {"type": "number", "description": "device: MSE of what the twin displayed, last second"},
        "rmse_deg": {"type": "number"},
        "load": {"type": "number"}, "k": {"type": "number"}, "h_ms": {"type": "number"},
        "rtt_ms": {"type": "number"}, "link_up": {"type": "boolean"}, "age_s": {"type": "number"},
    },
}


def topic_key(dev: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dev) or "device"


class UrdfAssets:
    """Serves each device's URDF and meshes as ``package://armtwin/KEY/<relative path>`` (asset handler)."""

    def __init__(self) -> None:
        self.roots: dict[str, Path] = {}
        self.requests = 0
        self.refused = 0

    def add(self, key: str, urdf: Path) -> str:
        self.roots[key] = urdf.parent.resolve()
        return f"package://armtwin/{key}/{urdf.name}"

    def __call__(self, uri: str) -> bytes | None:
        self.requests += 1
        m = re.match(r"^package://([^/]+)/(.+)$", uri)
        path = None
        if m and m.group(1) == "armtwin" and "/" in m.group(2):
            key, rel = m.group(2).split("/", 1)
            root = self.roots.get(key)
            path = None if root is None else (root / rel).resolve()
            if path is not None and root is not None and not path.is_relative_to(root):
                path = None  # ../ out of the URDF's folder
        elif m:  # a URDF naming its own package (package://pkg/meshes/x.stl): look under every URDF folder
            pkg, rel = m.group(1), m.group(2)
            path = next((p for r in self.roots.values() for p in (r / rel, r / pkg / rel, r.parent / pkg / rel)
                         if p.is_file() and p.resolve().is_relative_to(r.parent)), None)
        if path is None or not path.is_file():
            self.refused += 1
            return None
        return path.read_bytes()


@dataclass
class ArmScene:
    """One device's arm in PyBullet (link frames of a pose) and the Foxglove channels it publishes on."""

    dev: DeviceView
    arm: ArmModel
    base_link: str
    url: str
    channels: dict[str, Any] = field(default_factory=dict)

    def frames(self, q: np.ndarray, prefix: str, origin: tuple[float, float, float]) -> list[Any]:
        """FrameTransform of every link relative to its parent link at recorded pose ``q`` (rad), plus world ->
        the base link at ``origin``."""
        import foxglove.messages as fm

        pb = import_pybullet()
        qu = self.arm.urdf_q(q)[0]
        for idx, val in zip(self.arm.resolved.joint_index, qu, strict=True):
            pb.resetJointState(self.arm.body, int(idx), float(val), physicsClientId=self.arm.client)
        world: dict[int, tuple[Any, Any]] = {-1: ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))}
        out = [_tf(fm, "world", prefix + self.base_link, origin, (0.0, 0.0, 0.0, 1.0))]
        for j in self.arm.joints:
            st = pb.getLinkState(self.arm.body, j.index, computeForwardKinematics=True, physicsClientId=self.arm.client)
            world[j.index] = (st[4], st[5])
            inv = pb.invertTransform(*world[j.parent])
            pos, orn = pb.multiplyTransforms(inv[0], inv[1], st[4], st[5])
            parent = self.base_link if j.parent < 0 else self.arm.joints[j.parent].link
            out.append(_tf(fm, prefix + parent, prefix + j.link, pos, orn))
        return out

    def ee(self, q: np.ndarray) -> np.ndarray:
        return self.arm.fk(q[None, :])[0]


def _tf(fm: Any, parent: str, child: str, pos: Any, orn: Any) -> Any:
    return fm.FrameTransform(parent_frame_id=parent, child_frame_id=child,
                             translation=fm.Vector3(x=float(pos[0]), y=float(pos[1]), z=float(pos[2])),
                             rotation=fm.Quaternion(x=float(orn[0]), y=float(orn[1]), z=float(orn[2]),
                                                    w=float(orn[3])))


class FoxgloveBridge:
    """Twin feed -> Foxglove WebSocket server. ``run(stop)`` polls the feed and publishes at most ``rate_hz``."""

    def __init__(self, feed: TwinFeed, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 rate_hz: float = MAX_RATE_HZ, urdf: str | None = None, joint_map: str | None = None,
                 ee_link: str | None = None) -> None:
        import foxglove

        self.feed, self.urdf, self.joint_map, self.ee_link = feed, urdf, JointMap.parse(joint_map), ee_link
        self.period_s = 1.0 / min(max(rate_hz, 0.1), MAX_RATE_HZ)
        self.assets = UrdfAssets()
        self.ctx = foxglove.Context()
        self.server = foxglove.start_server(name="armtwin", host=host, port=port, context=self.ctx,
                                            asset_handler=self.assets)
        self.port = self.server.port
        self.scenes: dict[str, ArmScene] = {}
        self.errors: dict[str, str] = {}
        self.published = 0
        from foxglove.channels import FrameTransformsChannel

        self.tf = FrameTransformsChannel("/tf", context=self.ctx)

    def _scene(self, dv: DeviceView) -> ArmScene | None:
        from foxglove import Channel
        from foxglove.channels import JointStatesChannel

        sc = self.scenes.get(dv.dev)
        if sc is not None and sc.dev is dv:
            return sc
        if sc is not None:
            sc.arm.disconnect()
        key = topic_key(dv.dev)
        try:
            arm = open_arm(ArmSpec(self.urdf, self.joint_map.spec() or None, self.ee_link), dv.joints,
                           {"urdf": dv.urdf})
        except ArmModelError as exc:
            if self.errors.get(dv.dev) != str(exc):
                self.errors[dv.dev] = str(exc)
                print(f"error: device {dv.dev}: {exc} (not shown)", file=sys.stderr, flush=True)
            return None
        urdf = arm.urdf_id
        pb = import_pybullet()
        base = pb.getBodyInfo(arm.body, physicsClientId=arm.client)[0].decode()
        url = self.assets.add(key, resolve_urdf(urdf))
        sc = ArmScene(dv, arm, base, url)
        sc.channels = {
            "measured": JointStatesChannel(f"/{key}/measured/joint_states", context=self.ctx),
            "twin": JointStatesChannel(f"/{key}/twin/joint_states", context=self.ctx),
            "tracking": Channel(f"/{key}/tracking", schema=TRACKING_SCHEMA, context=self.ctx),
            "urdf": Channel(f"/{key}/urdf", schema={"type": "object", "title": "armtwin.Urdf"}, context=self.ctx),
        }
        self.scenes[dv.dev] = sc
        print(f"foxglove: {dv.dev}: URDF {url} (3D panel: URDF layers with frame prefixes {key}/measured/ and "
              f"{key}/twin/)", flush=True)
        return sc

    def publish(self, now_us: int) -> None:
        """One frame: every device's joint states, link frames and tracking figures."""
        import foxglove.messages as fm

        log_ns = time.time_ns()
        stamp = fm.Timestamp(sec=log_ns // 1_000_000_000, nsec=log_ns % 1_000_000_000)
        transforms: list[Any] = []
        for dv in list(self.feed.devices.values()):
            if dv.pred is None or dv.q_last is None:
                continue
            sc = self._scene(dv)
            if sc is None:
                continue
            twin = np.asarray(dv.twin_q(now_us), dtype=np.float64)
            meas = np.asarray(dv.q_last, dtype=np.float64)
            names = sc.arm.resolved.joint_names
            for role, q in (("measured", meas), ("twin", twin)):
                qu = sc.arm.urdf_q(q)[0]
                sc.channels[role].log(fm.JointStates(timestamp=stamp, joints=[
                    fm.JointState(name=n, position=float(v)) for n, v in zip(names, qu, strict=True)]),
                    log_time=log_ns)
                x = -dv.slot * SLOT_M
                transforms += sc.frames(q, f"{topic_key(dv.dev)}/{role}/",
                                        (x, SIDE_M / 2 * (1 if role == "twin" else -1), 0.0))
            sc.channels["tracking"].log(self.tracking(dv, sc, meas, twin, now_us), log_time=log_ns)
            sc.channels["urdf"].log({"url": sc.url, "frame_prefixes": [f"{topic_key(dv.dev)}/measured/",
                                                                       f"{topic_key(dv.dev)}/twin/"]},
                                    log_time=log_ns)
        if transforms:
            self.tf.log(fm.FrameTransforms(transforms=transforms), log_time=log_ns)
            self.published += 1

    @staticmethod
    def tracking(dv: DeviceView, sc: ArmScene, meas: np.ndarray, twin: np.ndarray, now_us: int) -> dict[str, Any]:
        st = dv.status
        out: dict[str, Any] = {
            "gap_deg_max": float(np.degrees(np.max(np.abs(twin - meas)))),
            "gap_ee_mm": float(np.linalg.norm(sc.ee(twin) - sc.ee(meas)) * 1000.0),
            "age_s": (now_us - dv.last_local_us) / 1e6,
        }
        for k in ("mse_deg2", "load", "k", "h_ms", "rtt_ms"):
            v = st.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[k] = float(v)
        if "mse_deg2" in out:
            out["rmse_deg"] = math.sqrt(max(out["mse_deg2"], 0.0))
        if "link_up" in st:
            out["link_up"] = bool(st["link_up"])
        return out

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Poll the feed; publish a frame when ``period_s`` has passed since the last one (so never faster). Ends
        early when every arm that came failed to fit its URDF (``errors``)."""
        end = None if duration_s is None else time.monotonic() + duration_s
        last = 0.0
        while not stop.is_set() and (end is None or time.monotonic() < end):
            if self.errors and not self.scenes:
                return  # the only arms that came do not fit their URDF: nothing to show (the CLI exits 2)
            wait = max(0.0, last + self.period_s - time.monotonic())
            self.feed.poll(int(wait * 1000))
            if time.monotonic() - last >= self.period_s:
                last = time.monotonic()
                self.publish(local_us())

    def close(self) -> None:
        self.server.stop()
        for sc in self.scenes.values():
            sc.arm.disconnect()
