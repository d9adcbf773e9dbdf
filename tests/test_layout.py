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
    "__main__",
}  # the CLI's own modules (cli/ holds options, rendering, pictures); the rest is the library


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
    # the built-in networks are files to copy: torch and one another (builtin registers cnn), nothing else
    assert graph["mnist20k.nets.builtin"] == {"mnist20k.nets.cnn"} and graph["mnist20k.nets.cnn"] == set()

    def is_command_line(module: str) -> bool:
        return module.partition(".")[2].split(".")[0] in COMMAND_LINE

    for name, deps in graph.items():
        if not is_command_line(name):
            assert not {d for d in deps if is_command_line(d)}, name


def test_the_networks_and_the_devices_know_no_settings():
    """A network is built from a name and arguments, a device from its name: neither reads a TrainConfig, so
    nets/ and device.py import nothing of config.py or settings.py (config.py imports nets/ for its defaults)."""
    graph = imports()
    for name, deps in graph.items():
        if name == "mnist20k.nets" or name.startswith("mnist20k.nets.") or name == "mnist20k.device":
            assert not deps & {"mnist20k.config", "mnist20k.settings"}, name


def test_only_the_command_line_imports_typer_or_rich():
    """typer and rich make the command line; the library under it prints nothing of its own design."""
    for path in PACKAGE.rglob("*.py"):
        if module_name(path).split(".")[1:2] in (["cli"], ["__main__"]):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.split(".")[0] in ("typer", "rich")], path


def test_sweep_and_tune_are_siblings_that_share_only_modules_of_their_own():
    """What both use (child processes, seeds, the device's name) lives outside either, in children.py, seeds.py
    and device.py: neither package imports the other."""
    graph = imports()
    for name, deps in graph.items():
        for one, other in (("sweep", "tune"), ("tune", "sweep")):
            if name.startswith(f"mnist20k.{one}"):
                assert not {d for d in deps if d.startswith(f"mnist20k.{other}")}, name


CHANGES = """
import ctypes, os, pkgutil, importlib, signal, sys, warnings

# glibc's mallopt() is what process.configure() calls: every call of it through ctypes is seen here
calls = []


class Seen(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(self._name)
        return super().__getattr__(name)


ctypes.CDLL = Seen
import torch
from torchvision.datasets import MNIST


def state():
    umask = os.umask(0o022); os.umask(umask)
    return (umask, signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), list(MNIST.mirrors),
            torch.get_num_threads(), list(warnings.filters), list(sys.path), dict(os.environ), calls[:])

before = state()
import mnist20k
for m in pkgutil.walk_packages(mnist20k.__path__, "mnist20k."):
    if m.name != "mnist20k.__main__":  # that one runs the command line
        importlib.import_module(m.name)
after = state()
assert after == before, [(a, b) for a, b in zip(after, before) if a != b]
print(len(sys.modules))
"""


def test_importing_every_module_changes_nothing_in_the_process():
    """Umask, signal handlers, torchvision's mirrors, torch's threads, the warnings filters, sys.path, the
    environment and glibc's allocator (process.configure's mallopt): the same after importing every module."""
    done = subprocess.run([sys.executable, "-c", CHANGES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_wheel_holds_every_module_the_draw_page_and_the_typed_marker(tmp_path):
    """The wheel pip builds from this tree, as a user's pip would: a module or a data file left out of it fails
    here, whether the tests run on an editable install or not."""
    import shutil
    import zipfile

    tree = tmp_path / "tree"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(PACKAGE, tree / "mnist20k", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(PACKAGE.parent / name, tree / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir"]
    done = subprocess.run([*build, str(tmp_path), str(tree)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("mnist20k-*.whl")
    packaged = {Path(name) for name in zipfile.ZipFile(wheel).namelist()}
    source = {p.relative_to(PACKAGE.parent) for p in PACKAGE.rglob("*.py")}
    source |= {Path("mnist20k/draw.html"), Path("mnist20k/py.typed")}  # py.typed: type checkers read the library
    assert source - packaged == set()
