"""Networks of your own, named by reference: `path/to/file.py:Name` or `package.module:Name`.

The habit of timm's --model and uvicorn's module:attr. `Name` is an nn.Module subclass or a function
that returns one, called with the run's `--arg NAME=VALUE` arguments (nets/__init__.py checks them). Code is
imported only from a reference the user gives on the command line, never from a file it reads: a checkpoint
records the reference, the file's path and its SHA-256, and loading it asks for the reference again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import sys
import sysconfig
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist20k.errors import Mnist20kError, UsageError
from mnist20k.files import reason

_IDENTIFIER = r"[A-Za-z_]\w*"
_DOTTED = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*")
SHAPES = "file.py:Name or package.module:Name"


class ModelCodeError(Mnist20kError):
    """The user's own network code failed: its import, its constructor, or its forward pass."""


def is_reference(name: str) -> bool:
    """True for a reference to user code (it has a colon); False for a built-in network's name."""
    return ":" in name


def check_reference(ref: str) -> None:
    """Refuse a malformed reference by its text alone, without importing anything."""
    where, _, attr = ref.rpartition(":")  # rpartition: a Windows path may hold a colon of its own
    if not where or not _DOTTED.fullmatch(attr):
        raise UsageError(f"--model {ref!r} is not a reference to a network; give {SHAPES}")
    if not _is_file(where) and not _DOTTED.fullmatch(where):
        raise UsageError(f"--model {ref!r}: {where!r} is neither a .py file nor a dotted module name")


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def file_of(ref: str) -> str | None:
    """The file a `file.py:Name` reference names, resolved as resolve() resolves it; None for a module's."""
    where = ref.rpartition(":")[0]
    return str(Path(where).resolve()) if _is_file(where) else None


@dataclass(frozen=True)
class Source:
    """A resolved reference: what to call, and the source file it came from."""

    ref: str  # as the user gave it
    path: str  # the resolved source file
    sha256: str  # of the file's bytes, as imported
    factory: Callable[..., object]
    roots: tuple[str, ...]  # folders of the user's code, to find their frame in a traceback

    def record(self) -> dict:
        """What a checkpoint keeps: where the code was, never the code."""
        return {"ref": self.ref, "path": self.path, "sha256": self.sha256}

    def build(self, args: dict):
        """Call the class or function with `args`; an error of the user's code is told by its own line."""
        from torch import nn

        with _importable(self.roots[0]), user_code(self.ref, self.roots):
            module = self.factory(**args)
        if not isinstance(module, nn.Module):
            raise ModelCodeError(f"--model {self.ref} returned a {type(module).__name__}, not an nn.Module")
        return module

    def check_output(self, module) -> None:
        """A forward pass of two blank images on the CPU must give (2, 10): logits or log-probabilities.
        In eval mode, so that BatchNorm's running statistics are left as they were built."""
        import torch

        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), user_code(self.ref, self.roots):
                out = module(torch.zeros(2, 1, 28, 28))
        finally:
            module.train(was_training)
        if not isinstance(out, torch.Tensor):
            raise ModelCodeError(
                f"--model {self.ref}: forward() returned a {type(out).__name__}, not a tensor of shape (2, 10)"
            )
        if tuple(out.shape) != (2, 10):
            raise ModelCodeError(
                f"--model {self.ref}: a batch of shape (2, 1, 28, 28) came out as {tuple(out.shape)}, not (2, 10): "
                "one score per digit for each image"
            )


def resolve(ref: str) -> Source:
    """Import the reference's module and find its Name; the failures are one line each."""
    check_reference(ref)
    where, _, attr = ref.rpartition(":")
    if _is_file(where):
        module, path, digest, roots = _import_file(ref, Path(where))
    else:
        module, path, digest, roots = _import_module(ref, where)
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise UsageError(f"--model {ref}: {path} has no {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory) or isinstance(factory, types.ModuleType):
        raise UsageError(f"--model {ref}: {attr} is a {type(factory).__name__}, not an nn.Module class or a function")
    return Source(ref, path, digest, factory, roots)


def file_sha256(path: str | Path) -> str | None:
    """The SHA-256 of the file now, or None if it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _import_file(ref: str, path: Path):
    """Run the file's code as a fresh module, from the very bytes that are hashed."""
    try:
        code = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--model {ref}: no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"--model {ref}: {path} is a folder, not a .py file") from None
    except OSError as e:
        raise UsageError(f"--model {ref}: cannot read {path}: {reason(e)}") from None
    path = path.resolve()
    folder = str(path.parent)
    # A module name of its own: the user's file never replaces a module already imported (say "model").
    name = "mnist20k_user." + re.sub(r"\W", "_", path.stem)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up here
    with _importable(folder), user_code(ref, (folder,)):
        exec(compile(code, str(path), "exec"), module.__dict__)
    return module, str(path), hashlib.sha256(code).hexdigest(), (folder,)


def _import_module(ref: str, dotted: str):
    cwd = os.getcwd()  # `python -m` and uvicorn both find packages in the working folder
    with _importable(cwd):
        try:
            with user_code(ref, (cwd,)):
                module = importlib.import_module(dotted)
        except ModelCodeError as e:
            missing = e.__cause__
            if isinstance(missing, ModuleNotFoundError) and _is_prefix(missing.name, dotted):
                raise UsageError(f"--model {ref}: no module named {missing.name!r}") from None
            raise
    path = getattr(module, "__file__", None)
    if path is None:
        raise UsageError(f"--model {ref}: {dotted} is a namespace package with no source file")
    top = importlib.import_module(dotted.split(".")[0])
    top_file = Path(top.__file__ or path)
    root = top_file.parent if top_file.name == "__init__.py" else top_file
    return module, str(Path(path).resolve()), file_sha256(path), (str(root), cwd)


def _is_prefix(name: str | None, dotted: str) -> bool:
    return name is not None and (dotted == name or dotted.startswith(name + "."))


@contextlib.contextmanager
def _importable(folder: str):
    """The user's folder first on sys.path while their code runs, so a helper module beside it imports."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


@contextlib.contextmanager
def user_code(ref: str, roots: tuple[str, ...]):
    """Any exception from the user's code becomes one line: their file, line, and error."""
    try:
        yield
    except Mnist20kError:
        raise
    except (Exception, SystemExit) as e:  # a script's sys.exit() on import is an error too
        raise ModelCodeError(f"--model {ref}: {where_it_failed(e, roots)}") from e


def where_it_failed(error: BaseException, roots: tuple[str, ...]) -> str:
    """`file:line: Type: message` at the deepest frame of the user's own code (a SyntaxError carries
    its own place); the deepest frame at all if none of it is theirs."""
    kind = type(error).__name__
    if isinstance(error, SyntaxError) and error.filename:
        return f"{_short(error.filename)}:{error.lineno}: {kind}: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    theirs = [f for f in frames if _is_theirs(f.filename, roots)]
    frame = (theirs or frames)[-1] if frames else None
    message = str(error).split("\n")[0]
    place = f"{_short(frame.filename)}:{frame.lineno}: " if frame else ""
    return f"{place}{kind}: {message}" if message else f"{place}{kind}"


# Library code, never the user's, even in a virtual environment inside the user's folder.
_LIBRARIES = {
    str(Path(__file__).parent.parent),  # mnist20k itself
    *(sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")),
}


def _is_theirs(filename: str, roots: tuple[str, ...]) -> bool:
    """Under one of the user's roots, unless a library folder nearer to the file holds it (a package of
    theirs installed in site-packages is a root nearer still)."""
    path = os.path.abspath(filename)
    mine = max((len(r) for r in roots if _under(path, r)), default=-1)
    library = max((len(r) for r in _LIBRARIES if _under(path, r)), default=-1)
    return mine > library


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _short(filename: str) -> str:
    """A path relative to the working folder when it is under it: what the user typed."""
    try:
        return os.path.relpath(filename) if _under(os.path.abspath(filename), os.getcwd()) else filename
    except ValueError:  # another drive on Windows
        return filename
