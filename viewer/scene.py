"""PyBullet display scene: arms posed by batched joint resets (no physics stepping), camera, text, rendering.

Each arm is a twin (opaque) with an optional translucent ghost of the same URDF. Two backends, one API:
``Scene(gui=True)`` opens the PyBullet window (OpenGL alpha, ``addUserDebugText``); there every PyBullet call waits
for the window's render loop, so twin and ghost are loaded as ONE merged multibody and posed by one reset per frame
(two calls per frame halved the frame rate under Xvfb). ``Scene()`` is headless (DIRECT + TinyRenderer, which
ignores alpha): the ghost is a separate body drawn in a second pass and blended by depth (the opaque twin wins
ties, so a shared base does not z-fight), and text is drawn onto the image with PIL.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
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

TWIN_RGBA = (0.95, 0.50, 0.10, 1.0)  # the twin (what the server predicts): opaque orange
MEASURED_RGBA = (0.20, 0.45, 0.95, 1.0)  # the measured arm: blue (translucent when it is the ghost)
GHOST_ALPHA = 0.35
BACKGROUND = (255, 255, 255)
_HIDDEN_Z = -1000.0  # hidden bodies are parked far below the camera's far plane


def fflush_c_stdio() -> None:
    """Flush C stdio buffers (what a C extension printed) before an fd is redirected or restored."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Send what C code writes on fds 1 and 2 to /dev/null (PyBullet's OpenGL/thread chatter in GUI mode) while
    Python's ``sys.stdout``/``sys.stderr`` keep writing to the real streams through duplicated fds."""
    old = (sys.stdout, sys.stderr)
    for stream in old:
        stream.flush()
    fflush_c_stdio()
    saved, devnull = (os.dup(1), os.dup(2)), os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False, encoding=st.encoding or "utf-8",  # noqa: SIM115
                                   errors="replace") for fd, st in zip(saved, old, strict=True))
    try:
        yield
    finally:
        sys.stdout.close()
        sys.stderr.close()
        sys.stdout, sys.stderr = old
        fflush_c_stdio()
        for fd, orig in zip((1, 2), saved, strict=True):
            os.dup2(orig, fd)
            os.close(orig)


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


@dataclass
class Camera:
    """Orbit camera: target point, distance (m), yaw and pitch (deg), vertical field of view (deg)."""

    target: tuple[float, float, float] = (0.0, 0.0, 0.55)
    distance: float = 2.3
    yaw: float = 60.0
    pitch: float = -20.0
    fov: float = 45.0


class Scene:
    """Arms in a PyBullet client the scene owns (``connect``/``disconnect`` or ``with``); no physics stepping."""

    def __init__(self, gui: bool = False, width: int = 640, height: int = 480) -> None:
        self.gui, self.width, self.height, self.client = gui, width, height, -1
        self.arms: dict[str, SceneArm] = {}
        self.camera = Camera()
        self.caption: list[str] = []
        self._font: Any = None
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
    def frame(self, keys: Iterable[str] | None = None, yaw: float | None = None) -> Camera:
        """Aim the camera so the bases of ``keys`` (default: all arms) fit; several arms are seen from yaw 90."""
        arms = [self.arms[k] for k in (keys if keys is not None else self.arms)]
        bases = np.array([a.base for a in arms]) if arms else np.zeros((1, 3))
        lo, hi = bases.min(axis=0), bases.max(axis=0)
        span = float(np.linalg.norm(hi[:2] - lo[:2]))
        center = (lo + hi) / 2
        cam = Camera((float(center[0]), float(center[1]), 0.55), (2.3 + 0.75 * span) * (0.7 if self.gui else 1),
                     yaw if yaw is not None else 90.0 if span > 0 else Camera.yaw, self.camera.pitch)
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

    def _font_for(self, size: int) -> Any:
        from PIL import ImageFont

        if self._font is None:
            try:
                self._font = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1: fixed bitmap font
                self._font = ImageFont.load_default()
        return self._font

    def draw_text(self, rgb: np.ndarray, view: Sequence[float], proj: Sequence[float],
                  keys: Iterable[str] | None = None) -> np.ndarray:
        """Caption at the top left and each arm's label/text above its base (projected into the image)."""
        from PIL import Image, ImageDraw

        h, w = rgb.shape[:2]
        font = self._font_for(max(11, h // 40))
        img = Image.fromarray(rgb)
        draw = ImageDraw.Draw(img)
        line_h = max(12, h // 34)
        for i, line in enumerate(self.caption):
            draw.text((8, 6 + i * line_h), line, fill=(0, 0, 0), font=font)
        mvp = np.asarray(proj, dtype=np.float64).reshape(4, 4).T @ np.asarray(view, dtype=np.float64).reshape(4, 4).T
        shown = set(keys) if keys is not None else set(self.arms)
        groups: dict[tuple[float, float, float], list[str]] = {}  # arms sharing a base share one text block
        for arm in self.arms.values():
            if arm.key in shown:
                groups.setdefault(arm.base, []).extend(([arm.label] if arm.label else []) + arm.text)
        for base, lines in groups.items():
            clip = mvp @ np.array([base[0], base[1], 1.45, 1.0])
            if not lines or clip[3] <= 0:
                continue
            x = (clip[0] / clip[3] + 1) / 2 * w
            y = (1 - clip[1] / clip[3]) / 2 * h - line_h * len(lines)
            y = max(y, 10 + len(self.caption) * line_h)
            for i, line in enumerate(lines):
                tw = draw.textlength(line, font=font)
                draw.text((int(min(max(x - tw / 2, 4), w - tw - 4)), int(y + i * line_h)), line, fill=(0, 0, 0),
                          font=font)
        return np.asarray(img)
