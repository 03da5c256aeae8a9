"""Write the device checkpoint ``POLICY.npz`` from a training checkpoint ``POLICY.pt`` (torch, lab only).

Training always writes both; this is for a ``.pt`` whose ``.npz`` was lost. The arm controller reads only the
``.npz`` (numpy), so torch never has to be installed there: ``python -m lab.kctd3.export POLICY.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from device.policies.kctd3.checkpoint import save_npz


def export_npz(pt: Path) -> Path:
    """``POLICY.pt`` -> ``POLICY.npz`` beside it (actor weights, normalisation, metadata); returns the path."""
    import torch

    raw = torch.load(pt, weights_only=True, map_location="cpu")
    actor = {k: v.numpy() for k, v in raw["actor_numpy"].items()}
    return save_npz(pt, actor, dict(raw["meta"]))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].endswith(".pt"):
        print("usage: python -m lab.kctd3.export POLICY.pt   (writes POLICY.npz beside it)", file=sys.stderr)
        return 2
    pt = Path(args[0])
    if not pt.exists():
        print(f"error: no checkpoint at {pt}", file=sys.stderr)
        return 2
    print(f"wrote {export_npz(pt)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
