"""No import circles among kpbench's modules: the graph of every import in kpbench/ (at module
level or inside a function, by statement or by importlib.import_module with a literal name; not
those under TYPE_CHECKING) has no cycle. The plug-in folders are outside it: they are loaded by
their package's name, which is how a registry meets its entries."""

from __future__ import annotations

import ast
from pathlib import Path

import kpbench

PACKAGE = Path(kpbench.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports (with ``from a import b``: both ``a`` and ``a.b``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Imports(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                for statement in node.orelse:
                    self.visit(statement)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)

        def visit_Call(self, node: ast.Call) -> None:
            if (getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                found.add(node.args[0].value)
            self.generic_visit(node)

    Imports().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {other for other in imported_names(path) if other in modules and other != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                return [*path[path.index(other):], other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_holds_lazy_and_dynamic_imports() -> None:
    graph = import_graph()
    assert "kpbench.builtin" in graph["kpbench.data"]  # inside open_dataset
    assert "kpbench.samples" in graph["kpbench.cli"]  # inside commands


def test_kpbench_has_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def fresh_interpreter_output(code: str) -> str:
    """What ``code`` prints in a new interpreter on this checkout (no inherited imports)."""
    import subprocess
    import sys

    root = Path(kpbench.__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                            check=True, env={"PYTHONPATH": str(root), "PATH": ""})
    return result.stdout.strip() + result.stderr


def test_configs_load_without_torch_or_opencv() -> None:
    # Reading a run's config (DataSpec, TrainConfig) or naming a run from it (kpbench.identity)
    # must not pull in torch or cv2: reports, identities and tools that only read configs stay light.
    code = ("import sys, json\n"
            "from kpbench.config import TrainConfig\n"
            "from kpbench.dataspec import DataSpec\n"
            "from kpbench.identity import run_name\n"
            "run_name(TrainConfig(data=DataSpec(size=64)).to_dict())\n"
            "print(json.dumps(['torch' in sys.modules, 'cv2' in sys.modules]))\n")
    output = fresh_interpreter_output(code)
    assert output == "[false, false]", output


def test_a_plan_is_read_without_torch_or_opencv_but_for_its_protocols() -> None:
    # Importing kpbench.plan (and the cost module) loads neither; reading a plan's datasets,
    # experiments and cells (run names, variants) does not either. Only the [eval] check reads the
    # protocol registry, whose files import torch: here a stand-in registry takes its place.
    code = ("import sys, json, types\n"
            "import kpbench.plan, kpbench.cost\n"
            "light = ['torch' in sys.modules, 'cv2' in sys.modules]\n"
            "registry = types.ModuleType('kpbench.protocol')\n"
            "registry.ALL = 'all'\n"
            "registry.list_protocols = lambda: [types.SimpleNamespace(name='patches')]\n"
            "registry.EvalOptions = lambda: types.SimpleNamespace(with_settings=lambda settings: settings)\n"
            "sys.modules['kpbench.protocol'] = registry\n"
            "plan = kpbench.plan.load_plan('plans/paper-cpu.toml')\n"
            "assert plan.cells and plan.protocols == ('patches',), plan.protocols\n"
            "print(json.dumps(light + ['torch' in sys.modules, 'cv2' in sys.modules]))\n")
    output = fresh_interpreter_output(code)
    assert output == "[false, false, false, false]", output
