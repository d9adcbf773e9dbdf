"""Every network, through two calls: `build(name, args)` makes a fresh one, `rebuild(checkpoint)` the one a
checkpoint records, its weights loaded. A name is a built-in (builtin.py: base, tiny, micro) or a reference to
code of your own (code.py: `file.py:Name`, `package.module:Name`); either is checked to map (B, 1, 28, 28) to
(B, 10). What summary tells beyond the parameter table is anatomy.py's.

Words: a network's `name` is what --model gives, its `module` the nn.Module, its `code` a reference to yours.
Importing this package does not import torch (the command line's --help reads DEFAULT_DROPOUT).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mnist20k.errors import CheckpointError, InvalidNetwork, InvalidShape, SourceChanged, UsageError
from mnist20k.nets.code import (
    SHAPES,
    ModelCodeError,
    Source,
    check_reference,
    file_of,
    is_reference,
    resolve,
    user_code,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DEFAULT_DROPOUT",
    "ModelCodeError",
    "Network",
    "build",
    "build_model",
    "check_name",
    "count_params",
    "is_reference",
    "rebuild",
    "user_code",
]

# The default recipe's dropout (TrainConfig.dropout is this): a network built alone is the one training builds
# by default.
DEFAULT_DROPOUT = 0.0


@dataclass
class Network:
    """A built network and what rebuilds it: a built-in's name and constructor arguments, or the user's
    code (source) and the arguments it was called with."""

    module: nn.Module
    name: str
    args: dict
    source: Source | None = None

    def record(self) -> dict:
        """What a checkpoint keeps as its "model": where the code was, never the code."""
        if self.source is not None:
            return {**self.source.record(), "args": self.args}
        return {"name": self.name, "kwargs": self.args}


def build(
    name: str = "base", args: dict | None = None, *, dropout: float = DEFAULT_DROPOUT, source: Source | None = None
) -> Network:
    """A fresh network. A built-in takes `args` over its preset's arguments, and `dropout` unless `args` name
    one; your own code is called with `args` alone (`source` when it is resolved already). Either is checked to
    give one score per digit."""
    args = dict(args or {})
    if is_reference(name):
        source = source or resolve(name)
        _check_args(name, source.factory, args)
        module = source.build(args)
        source.check_output(module)
        return Network(module, name, args, source)
    from mnist20k.nets.builtin import PRESETS, current

    name = current(name)  # an old checkpoint's name, say
    check_name(name)
    cls, preset = PRESETS[name]
    given, args = args, {**preset, "dropout": dropout, **args}
    _check_args(name, cls, args)
    try:
        module = cls(**args)
    except (TypeError, ValueError) as e:  # widths of the wrong length, a shape that cannot work
        from mnist20k.nets.cnn import ShapeError

        spelled = " with " + " ".join(f"--arg {k}={_spell(v)}" for k, v in given.items()) if given else ""
        error = InvalidShape if isinstance(e, ShapeError) else InvalidNetwork
        raise error(f"{name} cannot be built{spelled}: {e}") from None
    return Network(module, name, {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()})


def _spell(value) -> str:
    """An argument's value as --arg takes it: 8,8 for (8, 8)."""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def rebuild(
    ckpt: dict, code: str | None = None, args: dict | None = None, *, where: str = "the checkpoint", device=None
) -> Network:
    """The network a checkpoint records, with its weights loaded; `where` names the checkpoint in messages.
    With `device`, the network is moved there in the memory layout training used (channels_last).

    A built-in is rebuilt from its recorded name and arguments. A network of the user's own is rebuilt only
    from the reference `code` given now, never from the checkpoint's record: importing code is the user's
    decision. Its recorded arguments are plain values and are used unless `args` replaces them. `code` may also
    name another built-in, whose weights must then fit. The same source file with other content gets a
    SourceChanged warning; weights that do not fit are refused either way, with what the checkpoint holds and
    what was asked for.
    """
    spec = ckpt["model"]
    theirs = isinstance(spec, dict) and isinstance(spec.get("ref"), str)
    if not theirs and not (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
        raise CheckpointError(f"checkpoint names no model it can rebuild: its 'model' entry is {spec!r:.80}")
    if theirs and code is None:
        raise UsageError(
            f"{where} holds a network of your own: pass --model {spec['ref']} to load it "
            "(mnist20k imports code only from a reference you give)"
        )
    recorded = spec.get("args" if theirs else "kwargs", {})
    same = _same_network(spec, code)
    if code is not None and is_reference(code):
        source = resolve(code)
        if theirs and same and spec.get("sha256") not in (None, source.sha256):
            changed = f"{source.path} has changed since this checkpoint was saved; loading its weights into it as it is"
            warnings.warn(SourceChanged(changed), stacklevel=2)
        network = build(code, recorded if args is None and theirs else args, source=source)
    elif not same:
        network = build(code, args)  # another built-in: its weights must fit, as checked below
    else:
        try:
            network = build(spec["name"], {**recorded, **(args or {})})
        except UsageError as e:
            raise CheckpointError(
                f"checkpoint names a network this mnist20k cannot build ({spec!r:.80}): {e}"
            ) from None
    try:
        network.module.load_state_dict(ckpt["model_state"])
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        held = f"{where} holds {_describe(spec, ckpt['model_state'])}"
        if not same:
            raise CheckpointError(f"{held}; --model {code} is another network") from None
        lines = [line.strip() for line in str(e).split("\n") if line.strip()]
        detail = next((line for line in lines if not line.startswith("Error(s) in loading")), lines[0] if lines else "")
        raise CheckpointError(f"{held}, and its weights do not fit {network.name} as asked: {detail[:160]}") from None
    if device is not None:
        import torch

        network.module = network.module.to(device, memory_format=torch.channels_last)
    return network


def build_model(name: str = "base", **args: object) -> nn.Module:
    """The library's shorthand for build(name, args).module: build_model("micro"), build_model("base",
    dropout=0.1), build_model("net.py:Net")."""
    return build(name, args).module


def check_name(name: str) -> None:
    """Refuse, by its text alone, a name that is neither a built-in nor a well-formed reference to code."""
    if is_reference(name):
        check_reference(name)  # the code itself is imported when the network is built
        return
    from mnist20k.nets.builtin import PRESETS, current

    if current(name) not in PRESETS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)}, or give {SHAPES}")


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _same_network(spec: dict, code: str | None) -> bool:
    """Whether `code`, given now, names the network the checkpoint recorded: the same built-in (old names
    included), or code from the same file."""
    if code is None:
        return True
    if "ref" in spec:
        return is_reference(code) and file_of(code) == spec.get("path")
    from mnist20k.nets.builtin import current

    return not is_reference(code) and current(code) == current(spec["name"])


def _describe(spec: dict, state: dict) -> str:
    """What a checkpoint's model entry is: `dsnet.py:DSNet (4,570 parameters, width=20)`, `tiny (7,736 ...)`."""
    import torch

    # parameters are the state's tensors less BatchNorm's statistics, which are buffers
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(t.numel() for k, t in state.items() if isinstance(t, torch.Tensor) and not k.endswith(buffers))
    args = spec.get("args" if "ref" in spec else "kwargs") or {}
    shown = ", ".join(f"{k}={v}" for k, v in args.items() if not (k == "dropout" and not v))
    return f"{spec.get('ref') or spec.get('name')} ({params:,} parameters{', ' + shown if shown else ''})"


def _takes(factory: Callable) -> tuple[set[str] | None, list[str]]:
    """(the keyword arguments `factory` takes, None for any; the ones it requires)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return None, []
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in params if p.kind in named}
    required = [p.name for p in params if p.default is p.empty and p.kind in (*named, p.POSITIONAL_ONLY)]
    any_name = any(p.kind is p.VAR_KEYWORD for p in params)
    return (None if any_name else names), required


def _check_args(name: str, factory: Callable, args: dict) -> None:
    """Refuse an argument the network does not take, and a required one left out, before anything is built."""
    names, needed = _takes(factory)
    unknown = sorted(set(args) - names) if names is not None else []
    if unknown:
        offered = ", ".join(sorted(names)) or "none"
        raise UsageError(f"{name} takes no argument {', '.join(unknown)} (it takes: {offered})")
    missing = [p for p in needed if p not in args]
    if missing:
        given = " ".join(f"--arg {p}=VALUE" for p in missing)
        raise UsageError(f"--model {name} needs arguments ({', '.join(missing)}): give them with {given}")
