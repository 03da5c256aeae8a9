"""PyBullet display scene: arms posed by batched joint resets (no physics stepping), camera, text, rendering.

Each arm is a twin (opaque) with an optional translucent ghost of the same URDF. Two backends, one API:
``Scene(gui=True)`` opens the PyBullet window (OpenGL alpha, ``addUserDebugText``); there every PyBullet call waits
for the window's render loop, so twin and ghost are loaded as ONE merged multibody and posed by one reset per frame
(two calls per frame halved the frame rate under Xvfb). ``Scene()`` is headless (DIRECT + TinyRenderer, which
ignores alpha): the ghost is a separate body drawn in a second pass and blended by depth (the opaque twin wins
ties, so a shared base does not z-fight), and text is drawn onto the image with PIL (`viewer.overlay`). The camera
is fitted to the corners of the arms' link boxes at the poses to show (`viewer.camera`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from viewer.arm import (
    ArmModelError,
    JointMap,
    ResolvedMap,
    import_pybullet,
    read_joints,
    resolve_map,
    resolve_urdf,
)
from viewer.camera import GUI_FOV, Camera, fit_camera
from viewer.overlay import GHOST_ALPHA, MEASURED_RGBA, TWIN_RGBA, draw_overlay, text_bands

__all__ = ["MEASURED_RGBA", "TWIN_RGBA", "Camera", "Scene", "SceneArm", "merged_urdf"]
_HIDDEN_Z = -1000.0  # hidden bodies are parked far below the camera's far plane


def merged_urdf(path: Path, prefixes: Sequence[str]) -> str:
    """URDF text holding one copy of ``path`` per prefix (links, joints, materials renamed), all fixed to a root."""
    src = ET.parse(path).getroot()
    children = {c.get("link") for c in src.iter("child")}
    base = next(lk.get("name") for lk in src.findall("link") if lk.get("name") not in children)
    out = ET.Element("robot", name="armtwin_pair")
    inertial = ET.SubElement(ET.SubElement(out, "link", name="armtwin_root"), "inertial")  # (PyBullet warns without)
    ET.SubElement(inertial, "mass", value="0")
    ET.SubElement(inertial, "inertia", ixx="0", ixy="0", ixz="0", iyy="0", iyz="0", izz="0")
    for pre in prefixes:
        for el in (copy.deepcopy(e) for e in src if e.tag in ("link", "joint", "material")):
            el.set("name", pre + str(el.get("name")))
            for sub in el.iter():
                if sub is not el and (sub.tag in ("parent", "child") and sub.get("link")):
                    sub.set("link", pre + str(sub.get("link")))
                elif sub is not el and sub.tag == "material" and sub.get("name"):
                    sub.set("name", pre + str(sub.get("name")))
                elif sub.tag == "mesh" and not Path(fn := str(sub.get("filename"))).is_absolute():
                    sub.set("filename", str(path.parent / fn.removeprefix("package://")))
            out.append(el)
        mount = ET.SubElement(out, "joint", name=pre + "armtwin_mount", type="fixed")
        for tag, link in (("parent", "armtwin_root"), ("child", pre + str(base))):
            ET.SubElement(mount, tag, link=link)
    return ET.tostring(out, encoding="unicode")


@dataclass
class SceneArm:
    """A twin body and, optionally, a translucent ghost (a separate body headless, the same merged body in the
    GUI), each with the map from recorded joint order to its PyBullet joint indices."""

    key: str
    body: int
    map: ResolvedMap
    base: tuple[float, float, float]
    ghost_body: int = -1
    ghost_map: ResolvedMap | None = None
    label: str = ""
    shown: dict[str, bool] = field(default_factory=lambda: {"twin": True, "ghost": True})
    text: list[str] = field(default_factory=list)
    text_ids: list[int] = field(default_factory=list)


class Scene:
    """Arms in a PyBullet client the scene owns (``connect``/``disconnect`` or ``with``); no physics stepping."""

    def __init__(self, gui: bool = False, width: int = 640, height: int = 480) -> None:
        self.gui, self.width, self.height, self.client = gui, width, height, -1
        self.arms: dict[str, SceneArm] = {}
        self.camera = Camera()
        self.caption: list[str] = []  # top left: what is shown, time, errors
        self.legend: list[str] = []  # bottom left: which colour is which arm
        self._placed: dict[int, bool] = {}  # headless: body -> at its base (False: parked out of view)
        self._home: dict[int, Any] = {}  # body -> base (centre of mass) pose as loaded

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def connect(self) -> Scene:
        if self.client >= 0:
            return self
        pb = self.pb = import_pybullet()
        if self.gui:
            self.client = pb.connect(pb.GUI, options=f"--width={self.width} --height={self.height}")
            if self.client < 0:
                raise ArmModelError("cannot open the PyBullet GUI window")
            for flag in (pb.COV_ENABLE_GUI, pb.COV_ENABLE_SHADOWS, pb.COV_ENABLE_RGB_BUFFER_PREVIEW,
                         pb.COV_ENABLE_DEPTH_BUFFER_PREVIEW, pb.COV_ENABLE_SEGMENTATION_MARK_PREVIEW):
                pb.configureDebugVisualizer(flag, 0, physicsClientId=self.client)
        else:
            self.client = pb.connect(pb.DIRECT)
        return self

    def disconnect(self) -> None:
        if self.client >= 0:
            with contextlib.suppress(Exception):
                self.pb.disconnect(physicsClientId=self.client)
            self.client = -1
            self.arms.clear()
            self._placed.clear()
            self._home.clear()

    def __enter__(self) -> Scene:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def is_open(self) -> bool:
        """False once the user closed the GUI window."""
        return self.client >= 0 and bool(self.pb.isConnected(physicsClientId=self.client))

    # -- arms ------------------------------------------------------------------------------------------------
    def _load(self, path: str, base: tuple[float, float, float]) -> int:
        pb = self.pb
        if self.gui:
            pb.configureDebugVisualizer(pb.COV_ENABLE_RENDERING, 0, physicsClientId=self.client)
        try:
            body = int(pb.loadURDF(path, base, useFixedBase=True, physicsClientId=self.client))
            # The base pose PyBullet reports/resets is the base's centre of mass, not the URDF frame: keep it.
            self._home[body] = pb.getBasePositionAndOrientation(body, physicsClientId=self.client)
            return body
        except pb.error as exc:
            raise ArmModelError(f"cannot load URDF {path}: {exc}") from None
        finally:
            if self.gui:
                pb.configureDebugVisualizer(pb.COV_ENABLE_RENDERING, 1, physicsClientId=self.client)

    def _paint(self, body: int, rgba: Sequence[float], prefix: str = "") -> None:
        for j in [-1, *range(self.pb.getNumJoints(body, physicsClientId=self.client))]:
            link = "" if j < 0 else self.pb.getJointInfo(body, j, physicsClientId=self.client)[12].decode()
            if link.startswith(prefix):
                self.pb.changeVisualShape(body, j, rgbaColor=list(rgba), physicsClientId=self.client)

    def add_arm(self, key: str, urdf: str | os.PathLike[str] | None, joint_names: Sequence[str],
                joint_map: JointMap | str | None = None, base: tuple[float, float, float] = (0.0, 0.0, 0.0),
                rgba: Sequence[float] = TWIN_RGBA, ghost_rgba: Sequence[float] | None = None,
                label: str = "") -> SceneArm:
        """Load ``urdf`` as arm ``key`` (plus a translucent ghost if ``ghost_rgba``); ArmModelError if the URDF or
        joint map does not fit ``joint_names``."""
        pb, path = self.pb, resolve_urdf(urdf)
        jmap = joint_map if isinstance(joint_map, JointMap) else JointMap.parse(joint_map)
        ghost = (*ghost_rgba[:3], GHOST_ALPHA) if ghost_rgba is not None else None
        bodies: list[int] = []
        try:
            if self.gui and ghost is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / "pair.urdf").write_text(merged_urdf(path, ("twin__", "ghost__")))
                    bodies.append(self._load(str(Path(tmp) / "pair.urdf"), base))
                joints = read_joints(pb, bodies[0], self.client)
                maps = [resolve_map(jmap, joint_names, [replace(j, name=j.name.removeprefix(pre)) for j in joints
                                                        if j.name.startswith(pre)], str(urdf))
                        for pre in ("twin__", "ghost__")]
                self._paint(bodies[0], rgba, "twin__")
                self._paint(bodies[0], ghost, "ghost__")
                ghost_body = bodies[0]
            else:
                for color in [rgba, *([ghost] if ghost is not None else [])]:
                    bodies.append(self._load(str(path), base))
                    self._paint(bodies[-1], color)
                maps = [resolve_map(jmap, joint_names, read_joints(pb, b, self.client), str(urdf)) for b in bodies]
                ghost_body = bodies[1] if len(bodies) > 1 else -1
        except ArmModelError:
            for b in bodies:
                pb.removeBody(b, physicsClientId=self.client)
            raise
        if key in self.arms:
            self.remove_arm(key)
        arm = self.arms[key] = SceneArm(key, bodies[0], maps[0], base, ghost_body, maps[1] if ghost else None, label)
        return arm

    def remove_arm(self, key: str) -> None:
        arm = self.arms.pop(key)
        for tid in arm.text_ids:
            self.pb.removeUserDebugItem(tid, physicsClientId=self.client)
        for body in {arm.body, arm.ghost_body} - {-1}:
            self.pb.removeBody(body, physicsClientId=self.client)
            self._placed.pop(body, None)
            self._home.pop(body, None)

    def set_q(self, key: str, q: np.ndarray | Sequence[float] | None,
              ghost_q: np.ndarray | Sequence[float] | None = None) -> None:
        """Pose arm ``key`` (and its ghost) from recorded joint values (J,) rad: one batched reset per body.

        ``None`` leaves that part as it is; NaN (nothing to show yet) hides it headless until a valid pose comes
        (in the GUI it keeps its last pose)."""
        arm = self.arms[key]
        resets: dict[int, tuple[list[int], list[list[float]]]] = {}
        for part, qq, body, m in (("twin", q, arm.body, arm.map), ("ghost", ghost_q, arm.ghost_body, arm.ghost_map)):
            if qq is None or m is None:
                continue
            qu = m.apply(np.asarray(qq, dtype=np.float64))
            ok = not np.isnan(qu).any()
            arm.shown[part] = ok or self.gui
            if ok:
                idx, val = resets.setdefault(body, ([], []))
                idx += m.joint_index.tolist()
                val += [[v] for v in qu.tolist()]
        for body, (idx, val) in resets.items():
            self.pb.resetJointStatesMultiDof(body, idx, val, physicsClientId=self.client)

    def _place(self, body: int, at_base: bool) -> None:
        """Headless hiding: park a body far below the camera's far plane (TinyRenderer has no visibility flag)."""
        if body < 0 or self._placed.get(body, True) == at_base:
            return
        pos, orn = self._home[body]
        pos = pos if at_base else (pos[0], pos[1], _HIDDEN_Z)
        self.pb.resetBasePositionAndOrientation(body, pos, orn, physicsClientId=self.client)
        self._placed[body] = at_base

    def set_text(self, key: str, lines: Sequence[str]) -> None:
        """Text shown above arm ``key`` (debug text in the GUI, drawn onto the image headless)."""
        arm = self.arms[key]
        lines = list(lines)
        if lines == arm.text:
            return
        arm.text = lines
        if not self.gui:
            return
        for tid in arm.text_ids[len(lines):]:
            self.pb.removeUserDebugItem(tid, physicsClientId=self.client)
        ids = []
        for i, line in enumerate(lines):
            pos = [arm.base[0], arm.base[1], 1.55 - 0.09 * i]
            kw = {"replaceItemUniqueId": arm.text_ids[i]} if i < len(arm.text_ids) else {}
            ids.append(self.pb.addUserDebugText(line, pos, textColorRGB=[0, 0, 0], textSize=1.1,
                                                physicsClientId=self.client, **kw))
        arm.text_ids = ids

    # -- camera --------------------------------------------------------------------------------------------------
    def arm_points(self, keys: Iterable[str] | None = None,
                   poses: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Corners (N, 3) of the link boxes (AABBs) of the arms ``keys`` (default all) at ``poses[key]`` (recorded
        q rows, rad; NaN rows skipped), or as posed now (twin and ghost) for an arm without poses: what the camera
        must see. The arms' poses are left as they were."""
        pb, c = self.pb, self.client
        boxes: list[tuple[Any, Any]] = []
        for key in keys if keys is not None else list(self.arms):
            arm = self.arms[key]
            bodies = [arm.body] + ([arm.ghost_body] if arm.ghost_body not in (-1, arm.body) else [])
            for body in bodies:
                self._place(body, True)  # a hidden body is parked 1 km down; render re-places it
            rows = poses.get(key) if poses is not None else None
            if rows is None:
                for body in bodies:
                    boxes += self._link_boxes(body)
                continue
            idx = arm.map.joint_index.tolist()
            saved = [[st[0]] for st in pb.getJointStates(arm.body, idx, physicsClientId=c)]
            for qu in arm.map.apply(np.asarray(rows, dtype=np.float64).reshape(-1, len(arm.map.recorded))):
                if not np.isnan(qu).any():
                    pb.resetJointStatesMultiDof(arm.body, idx, [[v] for v in qu.tolist()], physicsClientId=c)
                    boxes += self._link_boxes(arm.body)
            pb.resetJointStatesMultiDof(arm.body, idx, saved, physicsClientId=c)
        if not boxes:
            return np.zeros((0, 3))
        lo, hi = np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes])
        return np.concatenate([np.where(np.array(m, dtype=bool), hi, lo)
                               for m in np.ndindex(2, 2, 2)])  # the 8 corners of every box

    def _link_boxes(self, body: int) -> list[tuple[Any, Any]]:
        return [self.pb.getAABB(body, j, physicsClientId=self.client)
                for j in range(-1, self.pb.getNumJoints(body, physicsClientId=self.client))]

    def frame(self, keys: Iterable[str] | None = None, yaw: float | None = None,
              poses: Mapping[str, np.ndarray] | None = None) -> Camera:
        """Fit the camera to the arms ``keys`` (default all) at ``poses`` (see ``arm_points``); several arms side
        by side are seen from yaw 90. Set the caption and legend first: the arm is fitted between them."""
        keys = list(keys if keys is not None else self.arms)
        bases = {self.arms[k].base for k in keys}
        yaw = yaw if yaw is not None else 90.0 if len(bases) > 1 else Camera.yaw
        return self.frame_points(self.arm_points(keys, poses), yaw=yaw, keys=keys)

    def frame_points(self, points: np.ndarray, yaw: float = Camera.yaw, keys: Iterable[str] | None = None) -> Camera:
        """Fit the camera to ``points`` (world, m) between the caption (and the labels of ``keys``' arms, drawn
        at the top) and the legend at the bottom; the default view if there are none."""
        if len(points) == 0:
            return self._set(Camera(yaw=yaw))
        pitch, fov = self.camera.pitch, GUI_FOV if self.gui else Camera.fov
        view = np.asarray(self.pb.computeViewMatrixFromYawPitchRoll([0, 0, 0], 1.0, yaw, pitch, 0, 2))
        labels = max([len(([a.label] if a.label else []) + a.text) for k, a in self.arms.items()
                      if keys is None or k in set(keys)] or [0])
        top, bottom = (0.0, 0.0) if self.gui else text_bands(self.height, len(self.caption) + labels,
                                                             len(self.legend))
        rot = view.reshape(4, 4).T[:3, :3]  # PyBullet's matrices are column-major
        return self._set(fit_camera(points, rot, self.width / self.height, yaw, pitch, fov, span_y=1 - top - bottom,
                                    centre_y=(bottom - top) / 2))

    def _set(self, cam: Camera) -> Camera:
        self.set_camera(cam)
        return cam

    def set_camera(self, cam: Camera) -> None:
        self.camera = cam
        if self.gui:
            self.pb.resetDebugVisualizerCamera(cam.distance, cam.yaw, cam.pitch, list(cam.target),
                                               physicsClientId=self.client)

    def _matrices(self, width: int, height: int, cam: Camera) -> tuple[list[float], list[float]]:
        pb = self.pb
        view = pb.computeViewMatrixFromYawPitchRoll(list(cam.target), cam.distance, cam.yaw, cam.pitch, 0, 2)
        proj = pb.computeProjectionMatrixFOV(cam.fov, width / height, 0.05, 30.0)
        return view, proj

    # -- rendering -----------------------------------------------------------------------------------------
    def render(self, width: int | None = None, height: int | None = None, keys: Iterable[str] | None = None,
               camera: Camera | None = None, text: bool = True) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of the arms ``keys`` (all by default) with TinyRenderer (headless only)."""
        pb = self.pb
        w, h = width or self.width, height or self.height
        cam = camera or self.camera
        view, proj = self._matrices(w, h, cam)
        show = {a.key for a in self.arms.values() if keys is None or a.key in set(keys)}

        def one_pass(part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            for a in self.arms.values():
                self._place(a.body, part == "twin" and a.key in show and a.shown["twin"])
                self._place(a.ghost_body, part == "ghost" and a.key in show and a.shown["ghost"])
            _, _, rgba, depth, seg = pb.getCameraImage(w, h, view, proj, renderer=pb.ER_TINY_RENDERER,
                                                       shadow=0, physicsClientId=self.client)
            return (np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[..., :3],
                    np.asarray(depth, dtype=np.float32).reshape(h, w), np.asarray(seg).reshape(h, w))

        rgb, depth, seg = one_pass("twin")
        if any(self.arms[k].ghost_body >= 0 and self.arms[k].shown["ghost"] for k in show):
            g_rgb, g_depth, g_seg = one_pass("ghost")
            over = (g_seg >= 0) & ((seg < 0) | (g_depth < depth - 1e-5))
            blend = GHOST_ALPHA * g_rgb[over].astype(np.float32) + (1 - GHOST_ALPHA) * rgb[over].astype(np.float32)
            rgb = rgb.copy()
            rgb[over] = np.clip(blend, 0, 255).astype(np.uint8)
        if text:
            rgb = self.draw_text(rgb, view, proj, keys=show)
        return rgb

    def screenshot(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """GUI only: the window's view rendered with OpenGL (translucency included), with the text drawn on."""
        pb = self.pb
        w, h = width or self.width, height or self.height
        cam = pb.getDebugVisualizerCamera(physicsClientId=self.client)
        view, proj = list(cam[2]), list(cam[3])
        _, _, rgba, _, _ = pb.getCameraImage(w, h, view, proj, renderer=pb.ER_BULLET_HARDWARE_OPENGL,
                                             physicsClientId=self.client)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[..., :3]
        return self.draw_text(rgb, view, proj)

    def overlay_lines(self, keys: Iterable[str] | None = None) -> list[str]:
        """Every text line a frame of the arms ``keys`` shows: caption, legend, then each arm's label and text."""
        shown = set(keys) if keys is not None else set(self.arms)
        arms = [([a.label] if a.label else []) + a.text for a in self.arms.values() if a.key in shown]
        return [*self.caption, *self.legend, *(line for lines in arms for line in lines)]

    def draw_text(self, rgb: np.ndarray, view: Sequence[float], proj: Sequence[float],
                  keys: Iterable[str] | None = None) -> np.ndarray:
        """Caption at the top left, legend at the bottom left, each arm's label/text above its base."""
        h, w = rgb.shape[:2]
        mvp = np.asarray(proj, dtype=np.float64).reshape(4, 4).T @ np.asarray(view, dtype=np.float64).reshape(4, 4).T
        shown = set(keys) if keys is not None else set(self.arms)
        groups: dict[tuple[float, float, float], list[str]] = {}  # arms sharing a base share one text block
        for arm in self.arms.values():
            if arm.key in shown:
                groups.setdefault(arm.base, []).extend(([arm.label] if arm.label else []) + arm.text)
        labels = []
        for base, lines in groups.items():
            clip = mvp @ np.array([base[0], base[1], 1.45, 1.0])
            if lines and clip[3] > 0:
                labels.append(((clip[0] / clip[3] + 1) / 2 * w, (1 - clip[1] / clip[3]) / 2 * h, lines))
        return draw_overlay(rgb, self.caption, self.legend, labels)
