"""Every policy family the device and the simulator know, and the ``--policy`` parser.

The table is explicit (no registration on import): adding a policy = a module under ``device/policies/`` plus one
``Family`` row here. Keys are checked against the row, so a misspelt key is an error rather than a silent default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from device.policies.base import Policy, PolicySpecError, parse_flag
from device.policies.event import DeadReckoningPolicy, SendOnDeltaPolicy
from device.policies.kctd3.policy import KCTD3Policy
from device.policies.static import SendAll, StaticPolicy
from twin.predictors import DEFAULT_PREDICTOR

Args = dict[str, str]


@dataclass(frozen=True)
class Family:
    """One ``--policy`` family: its keys (``path`` = a bare value, e.g. a checkpoint), which are required, an
    example form for messages and ``--help``, and the factory."""

    name: str
    form: str
    keys: tuple[str, ...]
    build: Callable[[Args], Policy]
    required: tuple[str, ...] = ()


def _look(text: str) -> float | str:
    """``look=auto`` (the measured one-way delay) or a lookahead in ms."""
    return "auto" if text.strip().lower() == "auto" else float(text)


def _kctd3(a: Args) -> Policy:
    resend = parse_flag(a["resend"]) if "resend" in a else None
    return KCTD3Policy(a["path"], a.get("pred"), float(a.get("rtt", 0)), float(a.get("loss", 0)), resend=resend,
                       online=parse_flag(a.get("online", "0")), actor=a.get("actor", "net"))


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("none", "none[:h=H_MS]", ("h",), lambda a: SendAll(float(a.get("h", 0)))),
    Family("static", "static:k=K,h=H_MS[,resend=1]", ("k", "h", "resend"),
           lambda a: StaticPolicy(int(a.get("k", 1)), float(a.get("h", 0)), parse_flag(a.get("resend", "0")))),
    Family("send-on-delta", "send-on-delta:delta=DEG[,h=H_MS][,hb=MS][,resend=1]", ("delta", "h", "hb", "resend"),
           lambda a: SendOnDeltaPolicy(float(a["delta"]), float(a.get("h", 0)), float(a.get("hb", 500)),
                                       parse_flag(a.get("resend", "0"))), required=("delta",)),
    Family("dead-reckoning", "dead-reckoning:delta=DEG[,h=H_MS][,hb=MS][,pred=NAME][,norm=max|rms|energy][,resend=1]"
           "[,look=MS|auto]", ("delta", "pred", "h", "hb", "norm", "resend", "look"),
           lambda a: DeadReckoningPolicy(float(a["delta"]), a.get("pred", DEFAULT_PREDICTOR), float(a.get("h", 200)),
                                         float(a.get("hb", 500)), a.get("norm", "max"),
                                         parse_flag(a.get("resend", "0")), _look(a.get("look", "0"))),
           required=("delta",)),
    Family("kc-td3", "kc-td3:POLICY.pt[,pred=NAME][,resend=0|1][,online=1][,actor=expert]",
           ("path", "pred", "rtt", "loss", "resend", "online", "actor"), _kctd3, required=("path",)),
    Family("td3", "td3:POLICY.pt[,pred=NAME][,resend=0|1][,online=1]",
           ("path", "pred", "rtt", "loss", "resend", "online"), _kctd3, required=("path",)),
)}


def policy_forms() -> str:
    """The valid ``--policy`` forms, one per line (for ``--help`` and error messages)."""
    return "\n".join(f"  {f.form}" for f in FAMILIES.values())


def parse_policy(spec: str) -> Policy:
    """``static:k=10,h=20`` / ``none`` / ``kc-td3:POLICY.pt,online=1`` ... -> Policy."""
    family_name, _, rest = spec.partition(":")
    family = FAMILIES.get(family_name.strip())
    if family is None:
        known = ", ".join(FAMILIES)
        raise PolicySpecError(f"unknown policy {family_name.strip()!r}; known: {known}\nforms:\n{policy_forms()}")
    args: Args = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        key = key.strip() if eq else "path"  # a bare value is a path (kc-td3:POLICY.pt)
        if key not in family.keys:
            valid = ", ".join(k for k in family.keys if k != "path") or "none"
            what = f"unexpected value {part!r}" if key == "path" else f"unknown key {key!r}"
            raise PolicySpecError(f"bad policy {spec!r}: {what} for {family.name}; valid keys: {valid} "
                                  f"(form: {family.form})")
        if key in args:
            raise PolicySpecError(f"bad policy {spec!r}: {key!r} given twice")
        args[key] = val.strip() if eq else part
    missing = [k for k in family.required if k not in args]
    if missing:
        what = "a checkpoint path" if missing == ["path"] else "key " + ", ".join(repr(k) for k in missing)
        raise PolicySpecError(f"bad policy {spec!r}: {family.name} needs {what} (form: {family.form})")
    try:
        return family.build(args)
    except PolicySpecError as exc:
        raise PolicySpecError(f"bad policy {spec!r}: {exc}") from exc
    except ValueError as exc:
        raise PolicySpecError(f"bad policy {spec!r}: {exc} (form: {family.form})") from exc
