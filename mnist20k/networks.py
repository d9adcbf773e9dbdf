"""Any network by name, in one place: a built-in from model.py, or your own code through refs.py
(`file.py:Name`, `package.module:Name`), with its keyword arguments (`--arg NAME=VALUE`), built and checked
to map (B, 1, 28, 28) to (B, 10). Training, resuming, eval, export and summary all build through here."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mnist20k.config import RENAMED
from mnist20k.errors import CheckpointError, SourceChanged, UsageError
from mnist20k.model import MODELS
from mnist20k.refs import SHAPES, ModelCodeError, Source, build, is_reference, resolve, user_code


@dataclass
class Network:
    """A built network and what rebuilds it: a built-in's name and constructor arguments, or the user's
    code (source) and the arguments it was called with."""

    module: nn.Module
    name: str
    args: dict
    source: Source | None = None

    def record(self) -> dict:
        """What a checkpoint keeps: where the code was, never the code."""
        if self.source is not None:
            return {**self.source.record(), "args": self.args}
        return {"name": self.name, "kwargs": self.args}


def make_network(name: str = "base", args: dict | None = None, source: Source | None = None) -> Network:
    """A fresh network: a built-in (`args` over its preset's arguments) or your own code, called with `args`
    (`source` when it is already resolved), checked to give one score per digit."""
    args = dict(args or {})
    if is_reference(name):
        source = source or resolve(name)
        check_args(name, source.factory, args)
        module = build(source, args)
        check_output(module, source)
        return Network(module, name, args, source)
    name = RENAMED["model"].get(name, name)  # an old checkpoint's name, say
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or give {SHAPES}")
    cls, preset = MODELS[name]
    check_args(name, cls, args)
    args = {**preset, **args}
    try:
        module = cls(**args)
    except (TypeError, ValueError) as e:  # widths of the wrong length, say
        raise UsageError(f"{name} cannot be built with {_spelled(args)}: {e}") from None
    return Network(module, name, {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()})


def build_model(name: str = "base", **args: object) -> nn.Module:
    """The network alone: build_model("micro"), build_model("base", dropout=0.1), build_model("net.py:Net")."""
    return make_network(name, args).module


def network_for(model: str, args: dict, dropout: float) -> Network:
    """The network a run trains: a built-in takes the run's dropout unless its arguments name one; a network
    of your own has its own."""
    return make_network(model, args if is_reference(model) else {"dropout": dropout, **args})


def network_from_checkpoint(
    ckpt: dict, model: str | None = None, args: dict | None = None, where: str = "the checkpoint"
) -> Network:
    """The network a checkpoint records, with its weights loaded; `where` names the checkpoint in messages.

    A built-in is rebuilt from its recorded name and arguments. A network of the user's own is rebuilt only
    from the reference `model` given now, never from the checkpoint's record: importing code is the user's
    decision. Its recorded arguments are plain values and are used unless `args` replaces them. The same source
    file with other content gets a SourceChanged warning; weights that do not fit are refused either way, with
    what the checkpoint holds and what was asked for.
    """
    spec = ckpt["model"]
    theirs = isinstance(spec, dict) and isinstance(spec.get("ref"), str)
    if not theirs and not (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
        raise CheckpointError(f"checkpoint names no model it can rebuild: its 'model' entry is {spec!r:.80}")
    if theirs and model is None:
        raise UsageError(
            f"{where} holds a network of your own: pass --model {spec['ref']} to load it "
            "(mnist20k imports code only from a reference you give)"
        )
    recorded = spec.get("args" if theirs else "kwargs", {})
    same = _same_network(spec, model)
    if model is not None and is_reference(model):
        source = resolve(model)
        if theirs and same and spec.get("sha256") not in (None, source.sha256):
            changed = f"{source.path} has changed since this checkpoint was saved; loading its weights into it as it is"
            warnings.warn(SourceChanged(changed), stacklevel=2)
        network = make_network(model, recorded if args is None and theirs else args, source)
    elif not same:
        network = make_network(model, args)  # another built-in: its weights must fit, as checked below
    else:
        try:
            network = make_network(spec["name"], {**recorded, **(args or {})})
        except UsageError as e:
            raise CheckpointError(
                f"checkpoint names a network this mnist20k cannot build ({spec!r:.80}): {e}"
            ) from None
    try:
        network.module.load_state_dict(ckpt["model_state"])
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        held = f"{where} holds {describe_record(spec, ckpt['model_state'])}"
        if not same:
            raise CheckpointError(f"{held}; --model {model} is another network") from None
        lines = [line.strip() for line in str(e).split("\n") if line.strip()]
        detail = next((line for line in lines if not line.startswith("Error(s) in loading")), lines[0] if lines else "")
        raise CheckpointError(f"{held}, and its weights do not fit {network.name} as asked: {detail[:160]}") from None
    return network


def _same_network(spec: dict, model: str | None) -> bool:
    """Whether `model`, given now, names the network the checkpoint recorded: the same built-in (old names
    included), or code from the same file."""
    if model is None:
        return True
    if "ref" in spec:
        return is_reference(model) and _file_of(model) == spec.get("path")
    return not is_reference(model) and RENAMED["model"].get(model, model) == RENAMED["model"].get(
        spec["name"], spec["name"]
    )


def _file_of(ref: str) -> str | None:
    """The file a `file.py:Name` reference names, resolved as refs.py resolves it; None for a module's."""
    from pathlib import Path

    where = ref.rpartition(":")[0]
    return str(Path(where).resolve()) if where.endswith(".py") or "/" in where else None


def describe_record(spec: dict, state: dict) -> str:
    """What a checkpoint's model entry is: `dsnet.py:DSNet (4,570 parameters, width=20)`, `tiny (7,736 ...)`."""
    # parameters are the state's tensors less BatchNorm's statistics, which are buffers
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = sum(t.numel() for k, t in state.items() if isinstance(t, torch.Tensor) and not k.endswith(buffers))
    args = spec.get("args" if "ref" in spec else "kwargs") or {}
    shown = ", ".join(f"{k}={v}" for k, v in args.items() if not (k == "dropout" and not v))
    return f"{spec.get('ref') or spec.get('name')} ({params:,} parameters{', ' + shown if shown else ''})"


def takes(factory: Callable) -> tuple[set[str] | None, list[str]]:
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


def constructor(name: str) -> Callable:
    """The class or function that builds the network `name`: a built-in's, or the user's code, imported."""
    if is_reference(name):
        return resolve(name).factory
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or give {SHAPES}")
    return MODELS[name][0]


def check_args(name: str, factory: Callable, args: dict, required: bool = True) -> None:
    """Refuse an argument the network does not take, and (if `required`) a required one left out, before
    anything is built."""
    names, needed = takes(factory)
    unknown = sorted(set(args) - names) if names is not None else []
    if unknown:
        offered = ", ".join(sorted(names)) or "none"
        raise UsageError(f"{name} takes no argument {', '.join(unknown)} (it takes: {offered})")
    missing = [p for p in needed if p not in args] if required else []
    if missing:
        given = " ".join(f"--arg {p}=VALUE" for p in missing)
        raise UsageError(f"--model {name} needs arguments ({', '.join(missing)}): give them with {given}")


def _spelled(args: dict) -> str:
    return " ".join(f"--arg {k}={v!r}" for k, v in args.items()) or "no arguments"


@torch.no_grad()
def check_output(model: nn.Module, source: Source) -> None:
    """A forward pass of two blank images on the CPU must give (2, 10): logits or log-probabilities.
    In eval mode, so that BatchNorm's running statistics are left as they were built."""
    was_training = model.training
    model.eval()
    try:
        with user_code(source.ref, source.roots):
            out = model(torch.zeros(2, 1, 28, 28))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelCodeError(
            f"--model {source.ref}: forward() returned a {type(out).__name__}, not a tensor of shape (2, 10)"
        )
    if tuple(out.shape) != (2, 10):
        raise ModelCodeError(
            f"--model {source.ref}: a batch of shape (2, 1, 28, 28) came out as {tuple(out.shape)}, not (2, 10): "
            "one score per digit for each image"
        )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
