"""Arm description: a URDF, a joint map from recorded joints to URDF joints, and forward kinematics.

``ArmModel`` owns a PyBullet DIRECT client (``connect``/``disconnect`` or ``with``). FK runs in numpy, batched
over poses, on the chain PyBullet reports at the zero pose (link frames, joint axes), matching PyBullet's own
per-pose getLinkState it is tested against (~10 µs/pose through PyBullet vs ~1 µs/pose batched).

Joint maps (``--joint-map``: sign, offset, units) are parsed and checked by name in ``twin.joint_map``;
``resolve_map`` binds them to PyBullet joint indices. Undriven URDF joints stay at 0. ``open_arm`` opens the arm a
verb was given (``twin.arm_spec``) for a session.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from twin.arm_spec import ArmSpec
from twin.constants import DEFAULT_URDF
from twin.joint_map import ArmModelError, JointMap, MapEntry, bind_names

__all__ = ["ArmModel", "ArmModelError", "ArmSpec", "JointLimitWarning", "JointMap", "MapEntry", "NoArm", "ResolvedMap",
           "ee_error_summary", "import_pybullet", "open_arm", "read_joints", "resolve_map", "resolve_urdf"]

_REVOLUTE, _PRISMATIC = 0, 1  # pybullet.JOINT_REVOLUTE / JOINT_PRISMATIC
_BLOCK = 8192  # poses per numpy FK block (bounds memory on hour-long sessions)


class JointLimitWarning(UserWarning):
    """Poses outside the URDF joint limits (displayed anyway)."""


def import_pybullet() -> ModuleType:
    """``import pybullet`` without its build-time banner (stderr in 3.2.7, stdout in other builds): with fds 1 and 2
    on /dev/null meanwhile, so ``--json`` output stays valid JSON and the terminal stays clean."""
    if "pybullet" not in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        saved, devnull = (os.dup(1), os.dup(2)), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pybullet  # noqa: F401
        finally:
            with contextlib.suppress(Exception):
                ctypes.CDLL(None).fflush(None)  # what C printed must land in /dev/null, not later on the terminal
            for fd, orig in zip((1, 2), saved, strict=True):
                os.dup2(orig, fd)
                os.close(orig)
            os.close(devnull)
    return sys.modules["pybullet"]


def resolve_urdf(urdf: str | os.PathLike[str] | None) -> Path:
    """A URDF path, or an id relative to ``pybullet_data`` (e.g. ``kuka_iiwa/model.urdf``)."""
    import pybullet_data

    name = str(urdf or DEFAULT_URDF)
    for cand in (Path(name).expanduser(), Path(pybullet_data.getDataPath()) / name):
        if cand.is_file():
            return cand.resolve()
    raise ArmModelError(f"URDF {name!r} not found: give a file path or a pybullet_data id like {DEFAULT_URDF}")


@dataclass(frozen=True)
class UrdfJoint:
    """A joint of the loaded URDF as PyBullet reports it (limits +-inf when the URDF sets none)."""

    index: int
    name: str
    type: int
    lower: float
    upper: float
    parent: int
    axis: tuple[float, ...]
    link: str
    movable: bool


def read_joints(pb: ModuleType, body: int, client: int) -> list[UrdfJoint]:
    out = []
    for j in range(pb.getNumJoints(body, physicsClientId=client)):
        i = pb.getJointInfo(body, j, physicsClientId=client)
        lo, hi = (float(i[8]), float(i[9])) if i[9] > i[8] else (-np.inf, np.inf)
        out.append(UrdfJoint(j, i[1].decode(), int(i[2]), lo, hi, int(i[16]), tuple(i[13]), i[12].decode(),
                             i[2] in (_REVOLUTE, _PRISMATIC)))
    return out


@dataclass(frozen=True)
class ResolvedMap:
    """A joint map bound to recorded names and a URDF: columns of q -> PyBullet joint indices."""

    recorded: tuple[str, ...]
    columns: np.ndarray  # (M,) column of the recorded q driving each mapped URDF joint
    joint_index: np.ndarray  # (M,) PyBullet joint index
    joint_names: tuple[str, ...]  # (M,) URDF joint names
    sign: np.ndarray
    offset: np.ndarray
    lower: np.ndarray  # -inf/+inf for unlimited joints
    upper: np.ndarray

    def apply(self, q: np.ndarray) -> np.ndarray:
        """Recorded q (N, J) or (J,) in rad -> URDF joint values (N, M) or (M,)."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape[-1] != len(self.recorded):
            raise ArmModelError(f"q has {q.shape[-1]} joints, the joint map expects {', '.join(self.recorded)}")
        return q[..., self.columns] * self.sign + self.offset



def resolve_map(jmap: JointMap, recorded: Sequence[str], joints: list[UrdfJoint], urdf: str) -> ResolvedMap:
    """Bind ``jmap`` to the recorded joint names and the URDF's joints; ArmModelError says what does not fit."""
    movable = {j.name: j for j in joints if j.movable}
    bound = bind_names(jmap, recorded, list(movable), [j.name for j in joints if not j.movable], urdf)
    pairs = sorted(((col, movable[name], sign, off) for col, name, sign, off in bound), key=lambda p: p[1].index)
    cols, js, signs, offs = zip(*pairs, strict=True) if pairs else ((), (), (), ())
    return ResolvedMap(tuple(recorded), np.array(cols, dtype=np.int64), np.array([j.index for j in js], dtype=np.int64),
                       tuple(j.name for j in js), np.array(signs, dtype=np.float64), np.array(offs, dtype=np.float64),
                       np.array([j.lower for j in js]), np.array([j.upper for j in js]))


class _ChainLink(NamedTuple):
    """Link ``joint`` (PyBullet index): frame at q=0 in its parent link's frame (rot, pos), unit joint axis."""

    joint: int
    type: int
    rot: np.ndarray
    pos: np.ndarray
    axis: np.ndarray
    skew: np.ndarray  # cross-product matrix of axis


class ArmModel:
    """A URDF arm in a PyBullet DIRECT client it owns, with a joint map and batched forward kinematics.

    ``ArmModel(urdf, joint_map, joint_names)`` loads on ``connect()`` (or entering a ``with`` block). ``fk(q)``
    returns end-effector positions (metres, world frame) of the ``ee_link`` frame origin (default: last link).
    Without ``joint_names`` the recording is taken to name the URDF's movable joints ``joint_1..joint_M``.
    """

    def __init__(self, urdf: str | os.PathLike[str] | None = None, joint_map: JointMap | str | None = None,
                 joint_names: Sequence[str] | None = None, ee_link: str | None = None) -> None:
        self.urdf_path, self.urdf_id = resolve_urdf(urdf), str(urdf or DEFAULT_URDF)
        self.joint_map = joint_map if isinstance(joint_map, JointMap) else JointMap.parse(joint_map)
        self._names, self.ee_link_name = (list(joint_names) if joint_names is not None else None), ee_link
        self.client = self.body = self.ee_index = -1
        self.joints: list[UrdfJoint] = []
        self.map: ResolvedMap | None = None
        self._chain: list[_ChainLink] = []  # base -> end-effector
        self.limit_violations = 0  # poses seen outside the URDF limits (each also raised a JointLimitWarning)

    def connect(self) -> ArmModel:
        if self.client >= 0:
            return self
        pb = import_pybullet()
        self.client = pb.connect(pb.DIRECT)
        try:
            try:
                self.body = pb.loadURDF(str(self.urdf_path), useFixedBase=True, physicsClientId=self.client)
            except pb.error as exc:
                raise ArmModelError(f"cannot load URDF {self.urdf_path}: {exc}") from None
            self.joints = read_joints(pb, self.body, self.client)
            names = self._names or [f"joint_{i + 1}" for i in range(sum(j.movable for j in self.joints))]
            self.map = resolve_map(self.joint_map, names, self.joints, self.urdf_id)
            links = {n: j.index for j in self.joints for n in (j.link, j.name)}
            if not self.joints or (self.ee_link_name is not None and self.ee_link_name not in links):
                raise ArmModelError(f"{self.urdf_id}: no end-effector link {self.ee_link_name!r}; links: "
                                    f"{', '.join(j.link for j in self.joints) or 'only a base'}")
            self.ee_index = len(self.joints) - 1 if self.ee_link_name is None else links[self.ee_link_name]
            self._chain = self._extract_chain(pb)
        except ArmModelError:
            self.disconnect()
            raise
        return self

    def disconnect(self) -> None:
        if self.client >= 0:
            pb = import_pybullet()
            with contextlib.suppress(pb.error):
                pb.disconnect(physicsClientId=self.client)
            self.client = -1

    def __enter__(self) -> ArmModel:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    @property
    def resolved(self) -> ResolvedMap:
        if self.map is None:
            raise ArmModelError("ArmModel is not connected: call connect() or use it in a with block")
        return self.map

    def _extract_chain(self, pb: ModuleType) -> list[_ChainLink]:
        """Base-to-end-effector links: frame at the zero pose relative to the parent link frame (root: world)."""
        n = len(self.joints)
        pb.resetJointStatesMultiDof(self.body, list(range(n)), [[0.0]] * n, physicsClientId=self.client)
        frames = {}
        for j in self.joints:
            st = pb.getLinkState(self.body, j.index, computeForwardKinematics=True, physicsClientId=self.client)
            frames[j.index] = (np.reshape(pb.getMatrixFromQuaternion(st[5]), (3, 3)), np.asarray(st[4]))
        path, i = [], self.ee_index
        while i >= 0:
            path.append(self.joints[i])
            i = self.joints[i].parent
        chain = []
        for j in reversed(path):
            r, p = frames[j.index]
            if j.parent >= 0:
                rp, pp = frames[j.parent]
                r, p = rp.T @ r, rp.T @ (p - pp)
            ax = np.asarray(j.axis) / max(float(np.linalg.norm(j.axis)), 1e-12)
            skew = np.array([[0, -ax[2], ax[1]], [ax[2], 0, -ax[0]], [-ax[1], ax[0], 0]])
            chain.append(_ChainLink(j.index, j.type, r, p, ax, skew))
        return chain

    def urdf_q(self, q: np.ndarray) -> np.ndarray:
        """Recorded q (N, J) rad -> URDF joint values (N, M); ``JointLimitWarning`` (with a count) outside limits."""
        m = self.resolved
        qu = m.apply(np.atleast_2d(np.asarray(q, dtype=np.float64)))
        bad = (qu < m.lower - 1e-9) | (qu > m.upper + 1e-9)  # NaN rows compare False: not counted
        if rows := int(bad.any(axis=1).sum()):
            self.limit_violations += rows
            names = ", ".join(m.joint_names[i] for i in np.flatnonzero(bad.any(axis=0)))
            warnings.warn(f"{rows} of {len(qu)} poses are outside the URDF joint limits of {names} "
                          f"({self.urdf_id}); displayed anyway - check the joint map's sign/offset",
                          JointLimitWarning, stacklevel=3)
        return qu

    def fk(self, q: np.ndarray, stride: int = 1) -> np.ndarray:
        """End-effector positions (N', 3) in metres of recorded poses ``q[::stride]`` (N, J) rad; NaN rows stay NaN."""
        qu = self.urdf_q(np.atleast_2d(np.asarray(q, dtype=np.float64))[:: max(int(stride), 1)])
        full = np.zeros((len(qu), len(self.joints)))
        full[:, self.resolved.joint_index] = qu
        return np.concatenate([self._fk_block(full[a:a + _BLOCK]) for a in range(0, len(qu), _BLOCK)] or
                              [np.empty((0, 3))])

    def _fk_block(self, qf: np.ndarray) -> np.ndarray:
        # Every product is (N*3, 3) @ (3, 3) or (3,): one BLAS call each instead of N tiny 3x3 matmuls.
        n = len(qf)
        rot = np.broadcast_to(np.eye(3), (n, 3, 3)).reshape(n * 3, 3)
        pos = np.zeros((n, 3))
        for i, link in enumerate(self._chain):
            pos += (rot @ link.pos).reshape(n, 3)
            if i == len(self._chain) - 1 and link.type != _PRISMATIC:
                break  # the end-effector point is its frame origin: its own rotation does not move it
            rot, qj = rot @ link.rot, qf[:, link.joint]
            if link.type == _REVOLUTE:  # Rodrigues: R Rot(a, q) = R + sin q (R K) + (1 - cos q) (R K^2)
                rk = rot @ link.skew
                rot = rot + np.repeat(np.sin(qj), 3)[:, None] * rk + np.repeat(1 - np.cos(qj), 3)[:, None] * (
                    rk @ link.skew)
            elif link.type == _PRISMATIC:
                pos += (rot @ link.axis).reshape(n, 3) * qj[:, None]
        return pos

    def ee_error_mm(self, q: np.ndarray, qhat: np.ndarray, stride: int = 1) -> np.ndarray:
        """|FK(q) - FK(q̂)| in mm per pose of ``[::stride]``; NaN where q̂ (or q) has a NaN (nothing displayed)."""
        q, qhat = np.atleast_2d(np.asarray(q, dtype=np.float64)), np.atleast_2d(np.asarray(qhat, dtype=np.float64))
        if q.shape != qhat.shape:
            raise ArmModelError(f"q {q.shape} and qhat {qhat.shape} differ in shape")
        q, qhat = q[:: max(int(stride), 1)], qhat[:: max(int(stride), 1)]
        ok = ~(np.isnan(q).any(axis=1) | np.isnan(qhat).any(axis=1))
        err = np.full(len(q), np.nan)
        if ok.any():
            err[ok] = np.linalg.norm(self.fk(q[ok]) - self.fk(qhat[ok]), axis=1) * 1000.0
        return err


def ee_error_summary(session: Any = None, *, q: np.ndarray | None = None, qhat: np.ndarray | None = None,
                     joint_names: Sequence[str] | None = None, urdf: str | None = None,
                     joint_map: JointMap | str | None = None, stride: int = 1,
                     ee_link: str | None = None) -> dict[str, float | int | str | None]:
    """End-effector position error (the task-level KPI) of a ``Session`` or (q, qhat): ``ee_err_mean_mm``,
    ``ee_err_p99_mm``, ``ee_err_max_mm`` (None if nothing was displayed, e.g. no qhat), ``ee_err_samples`` and
    ``ee_urdf`` (the URDF used; marked when it was assumed).
    The arm: ``urdf``/``joint_map``/``ee_link``, else the session's, else kuka_iiwa (``open_arm``); ``stride``
    subsamples long sessions. Raises ``ArmModelError`` (``NoArm``) when the arm does not fit the recording."""
    meta = None
    if session is not None:
        q, qhat, joint_names, meta = session.q, session.qhat, joint_names or session.joint_names, session.meta
    if q is None:
        raise ArmModelError("ee_error_summary needs a session or q")
    out: dict[str, float | int | str | None] = {"ee_err_mean_mm": None, "ee_err_p99_mm": None,
                                                "ee_err_max_mm": None, "ee_err_samples": 0}
    if qhat is None:
        return out
    names = list(joint_names) if joint_names is not None else [f"joint_{i + 1}" for i in range(np.shape(q)[-1])]
    spec = ArmSpec(urdf, joint_map.spec() if isinstance(joint_map, JointMap) else joint_map, ee_link)
    with open_arm(spec, names, meta) as arm, warnings.catch_warnings():
        warnings.simplefilter("ignore", JointLimitWarning)
        err = arm.ee_error_mm(q, qhat, stride)
    out["ee_urdf"] = arm.urdf_id if spec.over(meta).given else f"{arm.urdf_id} (assumed: no URDF given or recorded)"
    err = err[~np.isnan(err)]
    if len(err):
        out.update(ee_err_mean_mm=float(err.mean()), ee_err_p99_mm=float(np.percentile(err, 99)),
                   ee_err_max_mm=float(err.max()), ee_err_samples=len(err))
    return out


class NoArm(ArmModelError):
    """No URDF was given nor recorded, and the default arm (the KUKA iiwa) does not fit the recording: verbs for
    which the arm is optional (info, plot, simulate, evaluate) leave the end-effector error out; the others fail."""


def open_arm(spec: ArmSpec, joint_names: Sequence[str], meta: dict[str, Any] | None = None) -> ArmModel:
    """A connected ``ArmModel`` for recorded ``joint_names``: ``spec`` (the verb's --urdf/--joint-map/--ee-link)
    over the session's ``meta``. ``ArmModelError`` when the named arm does not fit; ``NoArm`` when none was named
    and the default does not fit either."""
    full = spec.over(meta)
    try:
        return ArmModel(full.urdf, full.joint_map, joint_names, full.ee_link).connect()
    except ArmModelError as exc:
        if full.given:
            raise
        raise NoArm(f"no URDF given and none recorded in the session, and the default {DEFAULT_URDF} does not fit: "
                    f"{exc}") from None
