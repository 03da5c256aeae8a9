"""``--config armtwin.toml`` for ``device``, ``server`` and ``view``: one file, a table per verb.

Precedence: a flag on the command line > the verb's table in the file > the built-in default. Keys are the long
option names (``server = "tcp://edge:5555"``, ``joint-names`` or ``joint_names``); an unknown key is an error that
lists the valid ones. ``armtwin.example.toml`` in the repository shows every table.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

CONFIG_VERBS = ("device", "server", "view")


class ConfigError(ValueError):
    """The config file cannot be read or names options the verb does not have."""


def config_path(argv: list[str]) -> Path | None:
    """The ``--config`` value in ``argv`` (``--config F`` or ``--config=F``), or None."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def apply_config(parser: argparse.ArgumentParser, verb: str, path: Path) -> None:
    """Make the values of the file's ``[verb]`` table the defaults of ``parser`` (flags still override them)."""
    try:
        table = tomllib.loads(path.read_text()).get(verb, {})
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"--config {path}: [{verb}] must be a table")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    values: dict[str, Any] = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            valid = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise ConfigError(f"--config {path}: [{verb}] has no option {key!r}; valid: {valid}")
        if isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            value = [value]
        conv = action.type if callable(action.type) else None
        if conv is not None:
            try:
                value = [conv(v) for v in value] if isinstance(value, list) else conv(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"--config {path}: [{verb}] {key} = {value!r}: {exc}") from None
        action.required = False  # given by the file
        values[dest] = value
    parser.set_defaults(**values)
