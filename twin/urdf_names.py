"""The movable joints a URDF names, read with the standard library (the arm controller has no PyBullet).

A URDF id such as ``kuka_iiwa/model.urdf`` is looked up in the installed ``pybullet_data`` folder by location
only (the package is never imported on the controller); a path is read as is.
"""

from __future__ import annotations

import importlib.util
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

MOVABLE = ("revolute", "continuous", "prismatic")


def find_urdf(urdf: str | os.PathLike[str]) -> Path | None:
    """A URDF file path, or the file of a pybullet_data id; None if neither exists."""
    cand = Path(urdf).expanduser()
    if cand.is_file():
        return cand
    try:
        spec = importlib.util.find_spec("pybullet_data")
    except (ImportError, ValueError):  # not installed (the controller's light install)
        return None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            if (Path(root) / str(urdf)).is_file():
                return Path(root) / str(urdf)
    return None


def movable_joint_names(urdf: str | os.PathLike[str]) -> list[str] | None:
    """Names of the URDF's revolute/continuous/prismatic joints in file order (PyBullet's order for a chain), or
    None when the URDF cannot be found or parsed."""
    desc = describe_urdf(urdf)
    return None if desc is None else desc.movable


@dataclass(frozen=True)
class UrdfNames:
    """The names a URDF declares: movable joints (file order), fixed joints, links."""

    movable: list[str]
    fixed: list[str]
    links: list[str]


def describe_urdf(urdf: str | os.PathLike[str]) -> UrdfNames | None:
    """The joint and link names of a URDF, or None when it cannot be found or parsed."""
    path = find_urdf(urdf)
    if path is None:
        return None
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    joints = [(j.get("name", ""), j.get("type")) for j in root.iter("joint") if j.get("name")]
    return UrdfNames([n for n, t in joints if t in MOVABLE], [n for n, t in joints if t not in MOVABLE],
                     [lk.get("name", "") for lk in root.iter("link") if lk.get("name")])
