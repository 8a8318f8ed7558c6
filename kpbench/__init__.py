"""kpbench: a benchmark suite for image generation from key local patches (Lee et al., ECCV 2018).

The variants and protocols live in the repository's top-level ``variants/`` and ``protocols/``
folders (one file each) but import as ``kpbench.variants`` and ``kpbench.protocols``, so kpbench
installs no top-level package besides itself:

- a wheel installs the two folders inside this package (``package-dir`` in pyproject.toml);
- in a source checkout (editable install, or the checkout's root on ``sys.path``) the folders
  sit next to this package, and :class:`_SiblingFolderFinder` maps the two names onto them.
  It goes first on ``sys.meta_path`` so that a checkout always imports its own folders, never
  those of another checkout's editable install.

Import them only by these names: with the checkout's root itself on ``sys.path`` (Python started
there), ``import variants`` would find the folder too, as a second, separate module.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"

PLUGIN_FOLDERS = ("variants", "protocols")  # imported as kpbench.<folder>

_PACKAGE_DIR = Path(__file__).resolve().parent


class _SiblingFolderFinder(importlib.abc.MetaPathFinder):
    """Finds ``kpbench.variants`` / ``kpbench.protocols`` in the checkout's top-level folders."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders  # module name -> folder holding its __init__.py

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def _source_layout_folders() -> dict[str, Path]:
    """The plug-in folders next to this package, unless they are installed inside it (a wheel)."""
    folders = {}
    for name in PLUGIN_FOLDERS:
        inside, beside = _PACKAGE_DIR / name, _PACKAGE_DIR.parent / name
        if not (inside / "__init__.py").is_file() and (beside / "__init__.py").is_file():
            folders[f"{__name__}.{name}"] = beside
    return folders


def _install_finder() -> None:
    # Once per process: importlib.reload(kpbench) runs this file again with a new finder class.
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if type(finder).__qualname__ != _SiblingFolderFinder.__qualname__
                        or type(finder).__module__ != __name__]
    if folders := _source_layout_folders():
        sys.meta_path.insert(0, _SiblingFolderFinder(folders))


_install_finder()
