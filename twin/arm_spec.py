"""Which arm a verb uses: ``--urdf``, ``--joint-map``, ``--ee-link``, added to every verb's parser by one helper.

A value not given on the command line comes from the session (a device records the ones it ran with in the
session's metadata: ``urdf``, ``joint_map``, ``ee_link``). With no URDF anywhere, the KUKA iiwa is assumed only
where its 7 joints fit the recording (``viewer.arm.open_arm``); otherwise the verb says to pass ``--urdf``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twin.constants import DEFAULT_URDF
from twin.joint_map import ArmModelError, JointMap, bind_names
from twin.urdf_names import describe_urdf

JOINT_MAP_HELP = ("RECORDED=URDF_JOINT[:SIGN[:OFFSET[:UNITS]]],... (NAME=none leaves a joint out) or a JSON file; "
                  "docs/your_arm.md")


@dataclass(frozen=True)
class ArmSpec:
    """A URDF (path or pybullet_data id), a joint map spec and an end-effector link; None = not given."""

    urdf: str | None = None
    joint_map: str | None = None
    ee_link: str | None = None

    @property
    def given(self) -> bool:
        """Did the user (or the session) name an arm? Then an arm that does not fit is an error."""
        return any((self.urdf, self.joint_map, self.ee_link))

    def over(self, meta: Mapping[str, Any] | None) -> ArmSpec:
        """This spec with what it leaves out taken from a session's metadata."""
        meta = meta or {}

        def pick(mine: str | None, key: str) -> str | None:
            return mine or (str(meta[key]) if meta.get(key) else None)

        return ArmSpec(pick(self.urdf, "urdf"), pick(self.joint_map, "joint_map"), pick(self.ee_link, "ee_link"))

    def label(self) -> str:
        """How the arm is named in messages: the URDF and whichever of map / link was given."""
        extra = "".join(f" {flag} {v}" for flag, v in (("--joint-map", self.joint_map), ("--ee-link", self.ee_link))
                        if v)
        return f"{self.urdf or DEFAULT_URDF}{extra}"


def add_arm_args(p: argparse.ArgumentParser,
                 urdf_default: str = "the session's, else kuka_iiwa/model.urdf if the joint count fits",
                 from_session: bool = True) -> None:
    """The three arm options, the same on every verb that uses the arm. ``urdf_default`` says where a URDF not
    given comes from; ``from_session``: the joint map and end-effector link default to the session's."""
    first = "the session's, else " if from_session else ""
    g = p.add_argument_group("arm (docs/your_arm.md)")
    g.add_argument("--urdf", default=None, metavar="URDF",
                   help=f"URDF path or pybullet_data id, e.g. xarm/xarm6_robot.urdf (default: {urdf_default})")
    g.add_argument("--joint-map", default=None, metavar="SPEC",
                   help=f"{JOINT_MAP_HELP} (default: {first}joints named as the URDF's drive those, else recorded "
                   "joint i drives the i-th movable URDF joint)")
    g.add_argument("--ee-link", default=None, metavar="LINK",
                   help=f"link whose origin is the end effector, e.g. link6 or panda_hand (default: {first}the "
                   "URDF's last link)")


def arm_spec(args: argparse.Namespace) -> ArmSpec:
    """The arm options of a parsed command line."""
    return ArmSpec(getattr(args, "urdf", None) or None, getattr(args, "joint_map", None) or None,
                   getattr(args, "ee_link", None) or None)


def check_arm(spec: ArmSpec, recorded: Sequence[str]) -> bool:
    """Check, by the URDF's names alone (no PyBullet: the arm controller runs this), that ``spec`` fits the
    recorded joint names: ``ArmModelError`` says what does not; False when the URDF is not on this machine (nothing
    could be checked; the viewer checks it again)."""
    urdf = spec.urdf or DEFAULT_URDF
    names = describe_urdf(urdf)
    if names is None:
        return False
    bind_names(JointMap.parse(spec.joint_map), recorded, names.movable, names.fixed, urdf)
    if spec.ee_link is not None and spec.ee_link not in names.links + names.movable + names.fixed:
        raise ArmModelError(f"{urdf}: no end-effector link {spec.ee_link!r}; links: {', '.join(names.links)}")
    return True
