"""Plug-in folders: every module of a package, found on disk (no hand-kept list).

The variants (``variants/``) and protocols (``protocols/``) register themselves when imported;
:func:`import_package_modules` imports every module of such a package, in file-name order, so
adding a file is all it takes to add one.
"""

from __future__ import annotations

import importlib
import pkgutil

PROTOCOLS_PACKAGE = "kpbench.protocols"  # the folder of protocol files, one protocol each


def package_module_names(package: str) -> list[str]:
    """The modules of ``package`` (its files and sub-packages, not starting with ``_``), sorted."""
    module = importlib.import_module(package)
    found = pkgutil.iter_modules(module.__path__)
    return sorted(info.name for info in found if not info.name.startswith("_"))


def import_package_modules(package: str) -> list[str]:
    """Import every module of ``package`` (see :func:`package_module_names`); returns their names."""
    names = package_module_names(package)
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
