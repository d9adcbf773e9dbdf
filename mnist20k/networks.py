"""Any network by name, in one place: a built-in from model.py with its settings, or your own code through
refs.py (`file.py:Name`, `package.module:Name`), built and checked to map (B, 1, 28, 28) to (B, 10)."""

from __future__ import annotations

import torch
from torch import nn

from mnist20k.errors import UsageError
from mnist20k.model import MODELS
from mnist20k.refs import SHAPES, ModelCodeError, Source, build, is_reference, resolve, user_code


def model_kwargs(name: str, dropout: float) -> dict:
    """The constructor settings a checkpoint records, as plain Python values."""
    _, settings = MODELS[name]
    return {"widths": list(settings["widths"]), "dropout": dropout}


def build_model(name: str = "seed", **kwargs: object) -> nn.Module:
    """A fresh network: a registry name (kwargs override its constructor settings), or a reference to
    your own, `file.py:Name` or `package.module:Name` (see refs.py), checked to map (B, 1, 28, 28) to
    (B, 10)."""
    if is_reference(name):
        if kwargs:
            raise UsageError(f"{name} is built by its own code, without settings ({', '.join(kwargs)})")
        return build_checked(resolve(name))
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}, or give {SHAPES}")
    cls, settings = MODELS[name]
    settings = {**settings, **kwargs}
    settings["widths"] = tuple(settings["widths"])
    return cls(**settings)


def build_network(name: str, dropout: float) -> tuple[nn.Module, Source | None]:
    """The network a run trains, and where its code came from when it is the user's own (None for a built-in,
    which takes the run's dropout)."""
    if not is_reference(name):
        return build_model(name, **model_kwargs(name, dropout)), None
    source = resolve(name)
    return build_checked(source), source


def build_checked(source: Source) -> nn.Module:
    model = build(source)
    check_output(model, source)
    return model


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


def model_record(name: str, dropout: float, source: Source | None = None) -> dict:
    """What a checkpoint records of its network: a built-in's name and settings, or where your code was."""
    if source is not None:
        return source.record()
    return {"name": name, "kwargs": model_kwargs(name, dropout)}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
