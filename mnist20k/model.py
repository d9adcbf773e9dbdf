"""The networks, as named blocks, and a registry of them by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k.config import TrainConfig
from mnist20k.errors import UsageError
from mnist20k.refs import SHAPES, ModelCodeError, Source, build, is_reference, resolve, user_code

DEFAULT_DROPOUT = TrainConfig.dropout  # a network built alone is the one training builds by default


class ConvBlock(nn.Sequential):
    """3x3 conv without padding or bias -> ReLU -> BatchNorm -> Dropout2d, in the seed's order.
    With dropout 0 there is no Dropout2d layer (it holds no weights, so checkpoints fit either way)."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        layers = [nn.Conv2d(c_in, c_out, kernel_size=3, bias=False), nn.ReLU(), nn.BatchNorm2d(c_out)]
        super().__init__(*layers, *([nn.Dropout2d(dropout)] if dropout > 0 else []))


class SeedNet(nn.Module):
    """The seed document's CNN; `widths` scales it, so smaller presets keep the same shape.

    widths = (input block, block 1, transition, block 2, block 3, block 4) output channels.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 20, 32, 16, 16), dropout: float = DEFAULT_DROPOUT):
        super().__init__()
        c0, c1, t, c2, c3, c4 = widths
        self.input_block = ConvBlock(1, c0, dropout)  # (B, 1, 28, 28) -> (B, c0, 26, 26)
        self.block1 = ConvBlock(c0, c1, dropout)  # -> (B, c1, 24, 24)
        # The 1x1 conv mixes channels cheaply before the pool halves the image.
        self.transition = nn.Sequential(
            nn.Conv2d(c1, t, kernel_size=1, bias=False),  # -> (B, t, 24, 24)
            nn.MaxPool2d(2, 2),  # -> (B, t, 12, 12)
        )
        self.block2 = ConvBlock(t, c2, dropout)  # -> (B, c2, 10, 10)
        self.block3 = ConvBlock(c2, c3, dropout)  # -> (B, c3, 8, 8)
        self.block4 = ConvBlock(c3, c4, dropout)  # -> (B, c4, 6, 6)
        self.gap = nn.AvgPool2d(kernel_size=6)  # -> (B, c4, 1, 1)
        self.head = nn.Conv2d(c4, 10, kernel_size=1, bias=False)  # -> (B, 10, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_block(x)
        x = self.block1(x)
        x = self.transition(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.block4(x)
        x = self.head(self.gap(x))
        return F.log_softmax(x.flatten(1), dim=-1)  # (B, 10)


class MicroNet(nn.Module):
    """Under 4,000 parameters: two thin blocks at full resolution, a pool, two blocks, and a last 3x3 conv
    that gives one map per digit, averaged into its score.

    widths = (block 1, block 2, block 3, block 4) output channels.
    """

    def __init__(self, widths: tuple[int, ...] = (8, 8, 12, 12), dropout: float = DEFAULT_DROPOUT):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.block1 = ConvBlock(1, c1, dropout)  # (B, 1, 28, 28) -> (B, c1, 26, 26)
        self.block2 = ConvBlock(c1, c2, dropout)  # -> (B, c2, 24, 24)
        self.pool = nn.MaxPool2d(2, 2)  # -> (B, c2, 12, 12)
        self.block3 = ConvBlock(c2, c3, dropout)  # -> (B, c3, 10, 10)
        self.block4 = ConvBlock(c3, c4, dropout)  # -> (B, c4, 8, 8)
        # A 3x3 conv straight to the ten class maps, in place of a fifth block and a 1x1 head (1,440
        # parameters at these widths, against 1,080): each map position sees 18x18 pixels, as in `seed`.
        self.classify = nn.Conv2d(c4, 10, kernel_size=3, bias=False)  # -> (B, 10, 6, 6)
        self.gap = nn.AvgPool2d(kernel_size=6)  # -> (B, 10, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block2(self.block1(x)))
        x = self.block4(self.block3(x))
        x = self.gap(self.classify(x))
        return F.log_softmax(x.flatten(1), dim=-1)  # (B, 10)


# name -> (network class, constructor settings); build_model(name) makes one.
MODELS: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "seed": (SeedNet, {"widths": (16, 32, 20, 32, 16, 16)}),  # 18,448 parameters, the seed's table
    "tiny": (SeedNet, {"widths": (8, 16, 10, 16, 16, 16)}),  # 7,736: the same shape, thinner
    "micro": (MicroNet, {"widths": (8, 8, 12, 12)}),  # 3,968
}


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
