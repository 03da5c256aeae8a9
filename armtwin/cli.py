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
from pathlib import Path

from armtwin.config import CONFIG_VERBS, ConfigError, apply_config, config_path
from armtwin.extras import install_hint, missing_extra

# verb -> (module providing add_parser(subparsers, name) and run(args) -> int, the extra it needs or None)
VERBS: dict[str, tuple[str, str | None]] = {
    "demo": ("armtwin.demo", "viewer"),
    "mock-arm": ("armtwin.mock_arm_cli", None),
    "device": ("device.cli", None),
    "server": ("server.cli", None),
    "keys": ("armtwin.cli_keys", None),
    "doctor": ("device.cli_doctor", None),
    "find-port": ("device.cli_find_port", None),
    "info": ("armtwin.cli_info", None),
    "import": ("armtwin.cli_import", None),
    "export": ("armtwin.cli_export", None),
    "recover": ("armtwin.cli_recover", None),
    "view": ("viewer.cli_view", "viewer"),
    "render": ("viewer.cli_render", "viewer"),
    "plot": ("viewer.cli_plot", "viewer"),
    "simulate": ("lab.cli_simulate", "lab"),
    "evaluate": ("lab.cli_evaluate", "lab"),
    "train": ("lab.cli_train", "lab"),
    "fit-predictor": ("lab.cli_fit_predictor", "lab"),
    "bench": ("bench.cli", None),  # the viewer part needs armtwin[viewer] (PyBullet); the others run anywhere
}

EPILOG = """examples:
  armtwin demo --seconds 20 --out demo-out
  armtwin keys init keys                    # CURVE keys: server, clients 'device' and 'viewer'
  armtwin import motion.csv -o motion.mcap
  armtwin mock-arm motion.mcap              # prints port=/dev/pts/N
  armtwin server --keys keys --bind tcp://*:5555 --pub tcp://*:5556
  armtwin device --keys keys --port /dev/pts/N --server tcp://127.0.0.1:5555 --policy static:k=10,h=0
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
        if verb in CONFIG_VERBS:
            sub.choices[verb].add_argument(
                "--config", type=Path, default=None, metavar="TOML",
                help=f"read options from the [{verb}] table of a TOML file; flags given here override it "
                "(example: armtwin.example.toml)")
        if extra is not None and missing_extra(extra):
            # A light install (the arm controller) keeps the verb visible and says what to install.
            hint = f"armtwin {verb} {install_hint(extra)}"
            p = sub.choices[verb]
            p.description = f"{p.description or ''}\n\n{hint}".strip()
            p.set_defaults(run=_missing(hint))
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse a command line; a ``--config`` file of device/server/view supplies defaults that flags override
    (raises ``ConfigError`` for a bad file)."""
    parser = build_parser()
    verb = argv[0] if argv else None
    cfg = config_path(argv) if verb in CONFIG_VERBS else None
    if cfg is not None:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        apply_config(sub.choices[str(verb)], str(verb), cfg)
    return parser, parser.parse_args(argv)


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
    try:
        parser, args = parse_args(args_in)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
