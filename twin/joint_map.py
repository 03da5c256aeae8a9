"""Joint maps: which recorded joint drives which URDF joint, with sign, offset and units (``--joint-map``).

Pure Python, so the arm controller (no PyBullet) checks a map against the URDF's joint names when a session starts,
with the same rules and messages as the viewer's forward kinematics (``viewer.arm.resolve_map`` binds the names
this module checks to PyBullet joint indices).

Spec: ``RECORDED=URDF_JOINT[:SIGN[:OFFSET[:UNITS]]],...`` (``RECORDED=none`` ignores a joint), e.g.
``joint_1=lbr_iiwa_joint_1,joint_2=lbr_iiwa_joint_2:-1:90:deg``: URDF angle = sign * recorded + offset; recorded
angles are radians (the session contract), UNITS (rad|deg) is the offset's unit. Or a JSON file
``{"units": "deg", "joints": {"joint_1": "lbr_iiwa_joint_1", "joint_2": {"urdf": ..., "sign": -1, "offset": 90}}}``.
No map: recorded joints named as URDF joints drive those joints; otherwise recorded joint i drives the i-th
movable URDF joint (counts must match).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ArmModelError(ValueError):
    """The URDF or joint map cannot describe the recorded arm; the message says what to change."""


@dataclass(frozen=True)
class MapEntry:
    """One recorded joint: which URDF joint it drives (None = ignored), sign, and offset in radians."""

    recorded: str
    urdf: str | None
    sign: float = 1.0
    offset_rad: float = 0.0


def _entry(rec: str, urdf: Any, sign: Any, offset: Any, units: str, where: str) -> MapEntry:
    if units not in ("rad", "deg"):
        raise ArmModelError(f"{where}: units must be 'rad' or 'deg', not {units!r}")
    try:
        sgn, off = float(sign), float(offset)
        if sgn not in (1.0, -1.0):
            raise ValueError(sign)
    except (TypeError, ValueError):
        raise ArmModelError(f"{where}: sign must be 1 or -1 and offset a number (got {sign!r}, {offset!r})") from None
    urdf = None if urdf is None or str(urdf).lower() == "none" else str(urdf)
    return MapEntry(str(rec), urdf, sgn, math.radians(off) if units == "deg" else off)


@dataclass(frozen=True)
class JointMap:
    """Which recorded joint drives which URDF joint; ``entries=None`` is the positional default map."""

    entries: tuple[MapEntry, ...] | None = None

    @classmethod
    def parse(cls, spec: str | os.PathLike[str] | None) -> JointMap:
        """A spec string, a JSON file path, or None/'' for the default map."""
        if spec is None or str(spec).strip() in ("", "default"):
            return cls()
        text = str(spec).strip()
        if text.endswith(".json") or (Path(text).is_file() and "=" not in text):
            return cls.from_json(text)
        entries, usage = [], "expected RECORDED=URDF_JOINT[:SIGN[:OFFSET[:UNITS]]]"
        for item in filter(None, (s.strip() for s in text.split(","))):
            rec, _, rhs = (s.strip() for s in item.partition("="))
            parts = [s.strip() for s in rhs.split(":")]
            if not rec or not parts[0] or len(parts) > 4:
                raise ArmModelError(f"joint map item {item!r}: {usage}")
            parts += [""] * (4 - len(parts))
            entries.append(_entry(rec, parts[0], parts[1] or 1, parts[2] or 0, parts[3] or "rad", item))
        return cls._checked(entries, text)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> JointMap:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArmModelError(f"joint map file {path}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("joints"), dict):
            raise ArmModelError(f"joint map file {path}: expected {{\"units\": ..., \"joints\": {{RECORDED: ...}}}}")
        units, entries = str(doc.get("units", "rad")), []
        for rec, val in doc["joints"].items():
            val = {"urdf": val} if val is None or isinstance(val, str) else val
            if not isinstance(val, dict):
                raise ArmModelError(f"{path}: joint {rec!r}: expected a URDF joint name or an object")
            entries.append(_entry(rec, val.get("urdf"), val.get("sign", 1), val.get("offset", 0),
                                  str(val.get("units", units)), f"{path}: joint {rec!r}"))
        return cls._checked(entries, str(path))

    @classmethod
    def _checked(cls, entries: list[MapEntry], source: str) -> JointMap:
        for what, names in (("recorded joint", [e.recorded for e in entries]),
                            ("URDF joint", [e.urdf for e in entries if e.urdf is not None])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ArmModelError(f"joint map {source!r}: {what}(s) {dup} mapped more than once")
        return cls(tuple(entries))

    @property
    def recorded(self) -> list[str] | None:
        """The recorded joint names the map is written for, in its order (None for the default map)."""
        return None if self.entries is None else [e.recorded for e in self.entries]

    def spec(self) -> str:
        """The map as a spec string (offsets in rad) that ``parse`` reads back: what a session records, so the
        file describes its arm without the JSON file it may have come from."""
        if self.entries is None:
            return ""
        return ",".join(f"{e.recorded}=none" if e.urdf is None else f"{e.recorded}={e.urdf}:{e.sign:g}:"
                        f"{e.offset_rad!r}:rad" for e in self.entries)


def bind_names(jmap: JointMap, recorded: Sequence[str], movable: Sequence[str], fixed: Sequence[str],
               urdf: str) -> list[tuple[int, str, float, float]]:
    """(column of the recorded q, URDF joint name, sign, offset rad) per driven URDF joint: ``jmap`` bound to the
    recorded names and the URDF's ``movable`` joints (in the URDF's order) and ``fixed`` ones. ``ArmModelError``
    says what does not fit and which option to pass."""
    recorded = list(recorded)
    if jmap.entries is None and recorded and set(recorded) <= set(movable):
        # The recording uses the URDF's own names (a device takes them from the URDF): bind by name, so an arm
        # whose URDF has more movable joints (the Panda's two fingers) needs no map; the rest stay at 0.
        return [(i, name, 1.0, 0.0) for i, name in enumerate(recorded)]
    if jmap.entries is None:
        if len(recorded) != len(movable):
            pairs = [f"{r}={u}" for r, u in zip(recorded, movable, strict=False)]  # copy-paste ready, if in order
            pairs += [f"{r}=none" for r in recorded[len(movable):]]
            example = ",".join(pairs) if pairs else "RECORDED=URDF_JOINT,..."
            raise ArmModelError(f"the recording has {len(recorded)} joints but {urdf} has "
                                f"{len(movable)} movable joints ({', '.join(movable)}): pass --urdf with your arm's "
                                f"URDF, or --joint-map '{example}' (NAME=none leaves a recorded joint out)")
        return [(i, movable[i], 1.0, 0.0) for i in range(len(recorded))]
    names = {e.recorded for e in jmap.entries}
    missing, unknown_rec = [r for r in recorded if r not in names], sorted(names - set(recorded))
    if unknown_rec or missing:
        raise ArmModelError(
            f"joint map does not match the recorded joints ({', '.join(recorded)}): "
            + (f"not recorded: {unknown_rec}; " if unknown_rec else "")
            + (f"not mapped: {missing} (map them, or write NAME=none to ignore one)" if missing else ""))
    out = []
    for e in jmap.entries:
        if e.urdf is None:
            continue
        if e.urdf not in movable:
            hint = " (a fixed joint)" if e.urdf in fixed else ""
            raise ArmModelError(f"joint map: {urdf} has no movable joint {e.urdf!r}{hint}; movable joints: "
                                f"{', '.join(movable)}")
        out.append((recorded.index(e.recorded), e.urdf, e.sign, e.offset_rad))
    return out
