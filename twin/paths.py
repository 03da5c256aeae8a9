"""Output paths: the one rule every verb that writes a file follows (render, export, import; the device's --record).

Missing parent directories are created; when they cannot be (a regular file is in the way, no permission) the
verb reports ``OutputPathError``'s one-line message as ``error: ...`` and exits with code 2. Lives in ``twin``
because every machine's verbs may use it (the device imports nothing above ``twin``).
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output file cannot be placed where asked; the message is one line naming the path and why."""


def prepare_output(path: str | os.PathLike[str]) -> Path:
    """Create the parent directories of the output ``path`` and return it; ``OutputPathError`` if they cannot be
    created or ``path`` is an existing directory."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"output {path} is a directory; give a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # mkdir says only 'File exists': name the ancestor that is a file, which is what the user must fix.
        blocker = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), parent)
        raise OutputPathError(f"cannot create directory {parent} for {path}: {blocker} is a file, "
                              "not a directory") from None
    except OSError as exc:
        raise OutputPathError(f"cannot create directory {parent} for {path}: {exc.strerror}") from None
    return path
