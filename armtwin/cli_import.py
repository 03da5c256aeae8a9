"""``armtwin import``: CSV of joint angles -> session file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="turn a CSV of joint angles into a session file",
        description="CSV header 't_s,<joint>,...': time in seconds (counted from the first row), one column per "
        "joint in degrees. The data must be a 1 kHz stream unless --resample is given, which interpolates it onto "
        "a 1 kHz grid (cubic Hermite) and marks the session as resampled. Angles are stored at the serial "
        "resolution (1 µrad). A CSV written by 'armtwin export' imports back: its q_<joint> columns are read, its "
        "qhat_<joint> and sent columns ignored.",
        epilog="examples:\n  armtwin import log.csv -o log.mcap\n  armtwin import mocap_60hz.csv -o m.mcap --resample",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("csv", type=Path, help="input CSV")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="session file to write (.mcap; missing parent directories are created)")
    p.add_argument("--resample", action="store_true", help="interpolate irregular or slower data to 1 kHz")
    p.add_argument("--source", help="free-text provenance stored in the session metadata")
    p.add_argument("--urdf", help="URDF of the arm (path or pybullet_data id, e.g. kuka_iiwa/model.urdf)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from twin.csv_io import CsvError, import_csv
    from twin.paths import OutputPathError, prepare_output
    from twin.session import write_session

    try:
        session = import_csv(args.csv, resample=args.resample, source=args.source)
        if args.urdf:
            session.meta["urdf"] = args.urdf
        prepare_output(args.output)
    except (CsvError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_session(args.output, session)
    print(f"wrote {args.output}: {len(session.t_us)} samples, {session.joints} joints, "
          f"{session.duration_s:.3f} s{' (resampled to 1 kHz)' if session.meta.get('resampled') else ''}")
    return 0
