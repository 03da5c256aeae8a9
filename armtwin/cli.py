"""``armtwin <verb>``: a small dispatcher. Each verb lives next to the code it drives and registers a parser.

Verb modules import only argparse at module level; heavy imports (numpy, zmq, pybullet, torch) happen inside
their ``run`` so ``armtwin --help`` and the 1 kHz paths do not pay for what they do not use.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# verb -> module providing add_parser(subparsers) and run(args) -> int
VERBS: dict[str, str] = {
    "demo": "armtwin.demo",
    "mock-arm": "armtwin.mock_arm_cli",
    "device": "device.cli",
    "server": "server.cli",
    "info": "twin.cli_info",
    "import": "twin.cli_import",
    "export": "twin.cli_export",
    "fit-predictor": "twin.cli_fit_predictor",
    "view": "twin.cli_view", "render": "twin.cli_render",
    "simulate": "device.cli_simulate",
    "evaluate": "device.cli_evaluate",
    "train": "device.cli_train",
}

EPILOG = """examples:
  armtwin demo --seconds 20 --out demo-out
  armtwin import motion.csv -o motion.mcap
  armtwin mock-arm motion.mcap              # prints port=/dev/pts/N
  armtwin server --bind tcp://*:5555 --pub tcp://*:5556
  armtwin device --port /dev/pts/N --server tcp://127.0.0.1:5555 --policy static:k=10,h=0 --duration 10
run 'armtwin <verb> --help' for the options of a verb."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="armtwin",
        description="Keep a digital twin of a robot arm in sync over a network with as little data as possible.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module in VERBS.items():
        importlib.import_module(module).add_parser(sub, verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
