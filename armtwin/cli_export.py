"""``armtwin export``: session file -> CSV (one row per sample)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="write a session as CSV: t_s, q_<joint> (deg), qhat_<joint> (deg), sent",
        description="One row per measured sample: device time in seconds, measured angles, what the twin "
        "displayed (empty before the first prediction, or if the session was never sent) and whether the "
        "sample was sent (0/1). LF line endings; 'armtwin import' reads it back (t_s and q_<joint>).",
        epilog="example:\n  armtwin export out.mcap --csv out.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", type=Path)
    p.add_argument("--csv", type=Path, required=True, help="output CSV path (missing parent directories are created)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from twin.csv_io import export_csv
    from twin.paths import OutputPathError, prepare_output
    from twin.session import SessionError, load_session

    try:
        session = load_session(args.session)
        prepare_output(args.csv)
    except (SessionError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = export_csv(session, args.csv)
    print(f"wrote {args.csv}: {n} rows{' (session file was truncated)' if session.truncated else ''}")
    return 0
