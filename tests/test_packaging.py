"""The variants/ and protocols/ folders import as kpbench.variants / kpbench.protocols in every
layout (editable install, a source checkout on sys.path, a wheel) and never as top-level packages."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import kpbench
from kpbench.protocol import list_protocols
from kpbench.variant import list_variants

REPO = Path(kpbench.__file__).resolve().parent.parent
SOURCE_PARTS = ("pyproject.toml", "README.md", "kpbench", "variants", "protocols", "plans")

# Lists the registries and where each plug-in module came from, as JSON.
LIST_SCRIPT = """
import json, sys
from kpbench.variant import list_variants
from kpbench.protocol import list_protocols
from kpbench.plan import shipped_plan
variants = [spec.name for spec in list_variants()]
protocols = [protocol.name for protocol in list_protocols()]
files = {name: sys.modules[f"kpbench.variants.{name}"].__file__ for name in ("full", "nomask")}
files["noise"] = sys.modules["kpbench.protocols.noise"].__file__
files["demo plan"] = str(shipped_plan("demo"))  # kpbench demo's plan
print(json.dumps({"variants": variants, "protocols": protocols, "files": files,
                  "top_level": [name for name in ("variants", "protocols") if name in sys.modules]}))
"""


def _copy_source(destination: Path) -> None:
    for part in SOURCE_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / part)


def _list_from(path_entry: Path, cwd: Path) -> dict:
    """Run LIST_SCRIPT in a fresh interpreter with ``path_entry`` first on sys.path."""
    env = {**os.environ, "PYTHONPATH": str(path_entry)}
    out = subprocess.run([sys.executable, "-c", LIST_SCRIPT], capture_output=True, text=True, check=True,
                         cwd=cwd, env=env, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plugins_import_inside_the_kpbench_namespace():
    assert list_variants() and list_protocols()
    finders = [finder for finder in sys.meta_path if type(finder).__name__ == "_SiblingFolderFinder"]
    assert len(finders) == 1 and sys.meta_path[0] is finders[0]
    importlib.reload(kpbench)  # running kpbench/__init__.py again keeps one finder
    assert [type(f).__name__ for f in sys.meta_path].count("_SiblingFolderFinder") == 1
    assert "variants" not in sys.modules and "protocols" not in sys.modules
    assert Path(sys.modules["kpbench.variants.full"].__file__).parent == REPO / "variants"
    assert Path(sys.modules["kpbench.protocols.noise"].__file__).parent == REPO / "protocols"


def test_a_source_checkout_imports_its_own_folders(tmp_path):
    # A second checkout on PYTHONPATH must list its own files, not the editable install's.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    _copy_source(checkout)
    (checkout / "variants" / "zz_extra.py").write_text(
        "import dataclasses\n"
        "from kpbench.variant import register_variant\n"
        "from kpbench.variants.full import FULL\n"
        "EXTRA = register_variant(dataclasses.replace(FULL, name='zz_extra', description='copy'))\n")
    listed = _list_from(checkout, cwd=tmp_path)
    assert listed["variants"][-1] == "zz_extra"
    assert all(Path(file).is_relative_to(checkout) for file in listed["files"].values())
    assert listed["top_level"] == []


def test_the_wheel_installs_the_folders_inside_the_package(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    _copy_source(source)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(wheels), str(source)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = wheels.glob("kpbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("variants", "protocols"):  # every file of the folders, and only those
        shipped = {name for name in names if name.startswith(f"kpbench/{folder}/")}
        in_checkout = {f"kpbench/{folder}/{path.relative_to(source / folder).as_posix()}"
                       for path in (source / folder).rglob("*.py")}
        assert shipped == in_checkout and f"kpbench/{folder}/__init__.py" in shipped
    assert {"kpbench/report/templates/page.html.j2", "kpbench/report/templates/plot.svg.j2"} <= set(names)
    assert {"kpbench/plans/demo.toml", "kpbench/plans/demo-tiny.toml"} <= set(names)
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"kpbench"}

    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    listed = _list_from(installed, cwd=tmp_path)
    assert listed["variants"] == [spec.name for spec in list_variants()]
    assert listed["protocols"] == [protocol.name for protocol in list_protocols()]
    assert all(Path(file).is_relative_to(installed / "kpbench") for file in listed["files"].values())
    assert listed["top_level"] == []


def test_the_type_check_covers_every_python_file_of_the_package_and_its_plugins():
    """mypy's configured files hold every .py under kpbench/, variants/ and protocols/, and no
    override turns its errors off (the plug-ins are checked under their folder names)."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    checked = [REPO / entry for entry in config["files"]]
    for folder in ("kpbench", "variants", "protocols"):
        for path in (REPO / folder).rglob("*.py"):
            assert any(path.is_relative_to(root) for root in checked), path
    for override in config.get("overrides", []):
        assert not override.get("ignore_errors"), override
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        ours = [name for name in modules if name.split(".")[0] in ("kpbench", "variants", "protocols")]
        assert not ours, ours
