"""Plug-ins: kpbench's own folders of variants and protocols, and a user's files from outside.

The variants (``variants/``) and protocols (``protocols/``) register themselves when imported;
:func:`import_package_modules` imports every module of such a package, in file-name order, so
adding a file is all it takes to add one.

A user's own variant (or protocol) file lives in their project, not in kpbench's checkout or
wheel. :func:`load_user_plugins` imports, once each, every plug-in named

- by an entry point of the groups in :data:`ENTRY_POINT_GROUPS` (a package's
  ``[project.entry-points."kpbench.variants"]`` table: ``name = "mypackage.my_variant"``);
- in the environment variable :data:`PLUGINS_ENV` (``os.pathsep``-separated ``.py`` files or
  module names);
- with :func:`add_plugin` (``kpbench --plugin FILE``, a plan's ``plugins`` list), which also
  appends it to :data:`PLUGINS_ENV` so that the processes a command starts (plan cells,
  torchrun) import it too.

The variant registry and the protocol registry call it before they are first read. A variant
registered from such a module carries its :class:`PluginSource` (module, file, content hash),
which its runs record, so that :func:`import_source` can import it again when a run is loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from kpbench.errors import KpbenchError
from kpbench.io import sha256_file

PLUGINS_ENV = "KPBENCH_PLUGINS"
ENTRY_POINT_GROUPS = ("kpbench.variants", "kpbench.protocols")
FILE_MODULE_PREFIX = "kpbench_plugin_"  # the module name of an imported file: prefix + stem + path hash

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


# --- a user's plug-ins -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PluginSource:
    """Where a plug-in variant came from: the module name it was imported as, its file and the
    file's SHA-256 (a run records it; the hash is part of the run's identity, the place is not)."""

    module: str
    file: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"module": self.module, "file": self.file, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PluginSource:
        return cls(str(data.get("module", "")), str(data.get("file", "")), str(data.get("sha256", "")))


_FILE_MODULES: dict[Path, str] = {}  # resolved file -> the module name it was imported as
_ENTRY_POINTS_LOADED: list[bool] = []  # once per process


def _is_file_reference(reference: str) -> bool:
    return reference.endswith(".py") or os.sep in reference or "/" in reference


def import_file(path: Path | str) -> ModuleType:
    """Import a ``.py`` file as a module (once per file per process) and return it."""
    resolved = Path(path).expanduser().resolve()
    if resolved in _FILE_MODULES and _FILE_MODULES[resolved] in sys.modules:
        return sys.modules[_FILE_MODULES[resolved]]
    if not resolved.is_file():
        raise KpbenchError(f"plug-in file {path} not found")
    name = f"{FILE_MODULE_PREFIX}{_identifier(resolved.stem)}_{_path_digest(resolved)}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise KpbenchError(f"plug-in file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: a plug-in that reads the registry (e.g. reference_variant())
    # re-enters load_user_plugins, which must find it already there.
    _FILE_MODULES[resolved] = name
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KpbenchError:
        _forget(resolved, name)
        raise
    except Exception as error:  # the user's code: any failure is theirs, shown as one line
        _forget(resolved, name)
        raise KpbenchError(f"plug-in file {path} failed to import: {type(error).__name__}: {error}") from None
    return module


def _forget(path: Path, name: str) -> None:
    _FILE_MODULES.pop(path, None)
    sys.modules.pop(name, None)


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _path_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


def import_plugin(reference: str) -> ModuleType:
    """Import a plug-in named by a ``.py`` file or a module name; a one-line error if it fails."""
    reference = reference.strip()
    if _is_file_reference(reference) or Path(reference).is_file():
        return import_file(reference)
    try:
        return importlib.import_module(reference)
    except ModuleNotFoundError as error:
        raise KpbenchError(f"plug-in module {reference!r} not found ({error}); name a module on "
                           "the Python path or a .py file") from None
    except Exception as error:
        raise KpbenchError(f"plug-in module {reference!r} failed to import: "
                           f"{type(error).__name__}: {error}") from None


def env_plugins() -> list[str]:
    """The plug-ins named in :data:`PLUGINS_ENV`, in order."""
    return [part for part in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if part.strip()]


def add_plugin(reference: str) -> ModuleType:
    """Import a plug-in now and name it in :data:`PLUGINS_ENV` for the processes started later.
    Files are recorded by their absolute path."""
    module = import_plugin(reference)
    entry = str(Path(reference).expanduser().resolve()) if _is_file_reference(reference) else reference
    if entry not in env_plugins():
        os.environ[PLUGINS_ENV] = os.pathsep.join([*env_plugins(), entry])
    return module


def _load_entry_points() -> None:
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED.append(True)
    for group in ENTRY_POINT_GROUPS:
        for entry_point in importlib.metadata.entry_points(group=group):
            try:
                entry_point.load()
            except Exception as error:
                raise KpbenchError(f"plug-in {entry_point.name!r} (entry point group {group}, "
                                   f"{entry_point.value}) failed to import: {type(error).__name__}: "
                                   f"{error}") from None


def load_user_plugins() -> None:
    """Import the plug-ins of the installed entry points and of :data:`PLUGINS_ENV` (each once)."""
    _load_entry_points()
    for reference in env_plugins():
        import_plugin(reference)


def source_of(module_name: str) -> PluginSource | None:
    """The :class:`PluginSource` of an imported module with a file (None without one)."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return None
    path = Path(file).resolve()
    return PluginSource(module_name, str(path), sha256_file(path))


def import_source(source: PluginSource, what: str) -> None:
    """Import the plug-in ``source`` names again, by module name when importable, else from its
    file; a one-line error naming ``what`` needs it when neither works. Warns when the file's
    content is not the recorded one."""
    problems = []
    module: ModuleType | None = None
    if source.module and source.module != "__main__" and not source.module.startswith(FILE_MODULE_PREFIX):
        try:
            module = importlib.import_module(source.module)
        except Exception as error:
            problems.append(f"module {source.module}: {type(error).__name__}: {error}")
    if module is None and source.file:
        if source.module == "__main__":
            problems.append(f"it was registered by the script {source.file}; move the variant into a "
                            "file of its own")
        elif Path(source.file).is_file():
            try:
                module = import_file(source.file)
            except KpbenchError as error:
                problems.append(str(error))
        else:
            problems.append(f"file {source.file} not found")
    if module is None:
        raise KpbenchError(f"{what} comes from a plug-in that cannot be imported ({'; '.join(problems)}); "
                           f"restore it, or load it with `kpbench --plugin FILE` or {PLUGINS_ENV}")
    current = source_of(module.__name__)
    if current is not None and source.sha256 and current.sha256 != source.sha256:
        warnings.warn(f"{what}: its plug-in {current.file} has changed since it was recorded "
                      f"(sha256 {source.sha256[:12]} -> {current.sha256[:12]})", stacklevel=2)
