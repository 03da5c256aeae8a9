"""``armtwin <verb>``: a small dispatcher. Each verb lives next to the code it drives and registers a parser.

Verb modules import only argparse at module level; heavy imports (numpy, zmq, pybullet, torch) happen inside
their ``run`` so ``armtwin --help`` and the 1 kHz paths do not pay for what they do not use. A verb whose extra
(``armtwin[lab]``, ``armtwin[viewer]``) is not installed stays listed and says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from armtwin.extras import install_hint, missing_extra

# verb -> (module providing add_parser(subparsers, name) and run(args) -> int, the extra it needs or None)
VERBS: dict[str, tuple[str, str | None]] = {
    "demo": ("armtwin.demo", "viewer"),
    "mock-arm": ("armtwin.mock_arm_cli", None),
    "device": ("device.cli", None),
    "server": ("server.cli", None),
    "info": ("armtwin.cli_info", None),
    "import": ("armtwin.cli_import", None),
    "export": ("armtwin.cli_export", None),
    "recover": ("armtwin.cli_recover", None),
    "view": ("viewer.cli_view", "viewer"),
    "render": ("viewer.cli_render", "viewer"),
    "simulate": ("lab.cli_simulate", "lab"),
    "evaluate": ("lab.cli_evaluate", "lab"),
    "train": ("lab.cli_train", "lab"),
    "fit-predictor": ("lab.cli_fit_predictor", "lab"),
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
    for verb, (module, extra) in VERBS.items():
        importlib.import_module(module).add_parser(sub, verb)
        if extra is not None and missing_extra(extra):
            # A light install (the arm controller) keeps the verb visible and says what to install.
            hint = f"armtwin {verb} {install_hint(extra)}"
            p = sub.choices[verb]
            p.description = f"{p.description or ''}\n\n{hint}".strip()
            p.set_defaults(run=_missing(hint))
    return parser


def _missing(hint: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"error: {hint}", file=sys.stderr)
        return 2

    return run


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    verb = args_in[0] if args_in else None
    if verb in VERBS and not {"-h", "--help"} & set(args_in):
        extra = VERBS[verb][1]
        if extra is not None and missing_extra(extra):  # before argparse complains about the verb's arguments
            print(f"error: armtwin {verb} {install_hint(extra)}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(args_in)
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
