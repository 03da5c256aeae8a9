"""Optional parts of the install: which extra a verb needs and whether it is there (without importing it)."""

from __future__ import annotations

import importlib.util

# extra -> the top-level modules it brings (pyproject.toml's [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {
    "lab": ("torch", "matplotlib", "tqdm", "pybullet"),
    "viewer": ("pybullet", "matplotlib", "tqdm", "imageio", "imageio_ffmpeg", "PIL", "foxglove"),
    "zenoh": ("zenoh",),  # asked for by `server --zenoh` / `view --zenoh` themselves (server.zenoh_tier)
}


def missing_extra(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty: the extra is installed)."""
    return [m for m in EXTRAS[extra] if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a broken half-installed package
        return False


def install_hint(extra: str) -> str:
    """One line naming the extra to install."""
    return f"needs the '{extra}' extra (missing: {', '.join(missing_extra(extra))}): pip install 'armtwin[{extra}]'"
