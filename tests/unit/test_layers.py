"""The import graph of vmrig's modules: arrows point one way, one module runs processes, edges read the environment."""

from __future__ import annotations

import ast
from pathlib import Path

import vmrig

SOURCE = Path(vmrig.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The vmrig modules `name` imports (TYPE_CHECKING and function-level imports included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            for alias in node.names:
                # `from vmrig.machine import qemu` imports the submodule, not the package's __init__.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports(name) for name in MODULES}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    assert find_cycle() is None, " -> ".join(find_cycle() or [])


def test_the_graph_sees_the_packages() -> None:
    assert "vmrig.machine.lifecycle" in GRAPH["vmrig.machine.machine"]
    assert "vmrig.machine.qemu" in GRAPH["vmrig.machine.lifecycle"]
    assert "vmrig.machine" in GRAPH["vmrig.driver.driver"]


def test_only_proc_imports_subprocess() -> None:
    users = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(imported.split(".")[0] == "subprocess" for imported in names):
                users.add(name)
    assert users == {"vmrig.proc"}


def test_the_machine_package_knows_nothing_above_it() -> None:
    above = ("vmrig.driver", "vmrig.cli", "vmrig.net", "vmrig.virtiofs", "vmrig.tpm", "vmrig.image.store")

    def within(target: str, module: str) -> bool:  # vmrig.net.plan is in vmrig.net, vmrig.netcard is not
        return target == module or target.startswith(f"{module}.")

    for name, targets in GRAPH.items():
        if name.startswith("vmrig.machine"):
            assert not [target for target in targets if any(within(target, module) for module in above)], name


# The edges read the environment (through vmrig.runenv.RunEnvironment) and hand its values down.
EDGES = ("vmrig.cli", "vmrig.__main__", "vmrig.driver", "vmrig.pytest")
# Below them, only these: the logger's presentation (NO_COLOR), Python's own breakpoint()
# convention (debug), and proc, which hands the whole environment on to the children it starts.
ENVIRONMENT_READERS = {
    "vmrig.log": {"NO_COLOR"},
    "vmrig.debug": {"PYTHONBREAKPOINT", "REMOTE_PDB_PORT"},
    "vmrig.proc": {"*"},
}
_ENVIRONMENT = ("environ", "environb", "getenv", "getenvb")


def environment_reads(path: Path) -> set[str]:
    """The variables a module reads through os.environ[...], os.environ.get(...) or os.getenv(...);
    `*` for any other use of the environment (a copy, `in`, a name imported from os)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found.update("*" for alias in node.names if alias.name in _ENVIRONMENT)
        if not (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in _ENVIRONMENT
        ):
            continue
        parent = parents.get(node)
        key: ast.expr | None = None
        if isinstance(parent, ast.Subscript) and parent.value is node:
            key = parent.slice
        elif isinstance(parent, ast.Attribute) and parent.attr == "get":
            call = parents.get(parent)
            key = call.args[0] if isinstance(call, ast.Call) and call.args else None
        elif isinstance(parent, ast.Call) and parent.func is node:
            key = parent.args[0] if parent.args else None
        found.add(key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else "*")
    return found


def test_only_the_edges_read_the_environment() -> None:
    readers = {
        name: reads
        for name, path in MODULES.items()
        if not any(name == edge or name.startswith(f"{edge}.") for edge in EDGES)
        if (reads := environment_reads(path))
    }
    assert readers == ENVIRONMENT_READERS


def test_the_environment_check_sees_every_way_of_reading(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "import os\nfrom os import getenv\n"
        "a = os.environ['A']\nb = os.environ.get('B', '')\nc = os.getenv('C')\nd = dict(os.environ)\n"
    )
    assert environment_reads(module) == {"A", "B", "C", "*"}
    # RunEnvironment reads the mapping an edge gives it, the driver gives it os.environ.
    assert environment_reads(MODULES["vmrig.runenv"]) == set()
    assert environment_reads(MODULES["vmrig.driver.driver"]) == {"*"}
