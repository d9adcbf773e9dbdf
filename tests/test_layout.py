"""The package's shape: imports point one way (no cycles, the networks a leaf, the library never importing the
command line), and importing mnist20k changes nothing in the process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "mnist20k"
COMMAND_LINE = {
    "cli",
    "options",
    "render",
    "render_sweep",
    "render_tune",
    "__main__",
}  # the CLI's own modules; the rest is the library


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """mnist20k module -> the mnist20k modules it imports, at the top or inside a function."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist20k"):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("mnist20k")}
        graph[name] = {m for m in found if m in modules and m != name and m != "mnist20k"}
    return graph


def test_no_import_cycles():
    graph = imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, "import cycle: " + " -> ".join([*path[path.index(name) :], name])
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_the_networks_import_nothing_of_mnist20k_and_the_library_no_command_line():
    graph = imports()
    assert graph["mnist20k.model"] == set()

    def is_command_line(module: str) -> bool:
        return module.partition(".")[2].split(".")[0] in COMMAND_LINE

    for name, deps in graph.items():
        if not is_command_line(name):
            assert not {d for d in deps if is_command_line(d)}, name


CHANGES = """
import os, pkgutil, importlib, signal, sys
from torchvision.datasets import MNIST

def state():
    umask = os.umask(0o022); os.umask(umask)
    return (umask, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), list(MNIST.mirrors))

before = state()
import mnist20k
for m in pkgutil.walk_packages(mnist20k.__path__, "mnist20k."):
    if m.name != "mnist20k.__main__":  # that one runs the command line
        importlib.import_module(m.name)
assert state() == before, (state(), before)
print(len(sys.modules))
"""


def test_importing_every_module_changes_nothing_in_the_process():
    done = subprocess.run([sys.executable, "-c", CHANGES], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_installed_package_holds_every_module_and_the_draw_page():
    """CI installs the project as a user does (not editable): a module left out of the wheel fails here."""
    import mnist20k

    installed = Path(mnist20k.__file__).parent
    source = {p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")} | {Path("draw.html")}
    assert source <= {p.relative_to(installed) for p in installed.rglob("*") if p.is_file()}
