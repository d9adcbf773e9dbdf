"""The built-in networks: their blocks, their classes, and the presets that name them (base, tiny, micro, and the
`cnn` family of cnn.py).
Plain torch; nets/__init__.py builds any network by name, yours included."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k.nets.cnn import CNN


class ConvBlock(nn.Sequential):
    """3x3 conv without padding or bias -> ReLU -> BatchNorm -> Dropout2d, in the seed's order.
    With dropout 0 there is no Dropout2d layer (it holds no weights, so checkpoints fit either way)."""

    def __init__(self, c_in: int, c_out: int, dropout: float):
        layers = [nn.Conv2d(c_in, c_out, kernel_size=3, bias=False), nn.ReLU(), nn.BatchNorm2d(c_out)]
        super().__init__(*layers, *([nn.Dropout2d(dropout)] if dropout > 0 else []))


class BaseNet(nn.Module):
    """The seed document's CNN (`base`); `widths` scales it, so `tiny` keeps the same shape.

    widths = (input block, block 1, transition, block 2, block 3, block 4) output channels.
    """

    def __init__(self, widths: tuple[int, ...], dropout: float):
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

    def __init__(self, widths: tuple[int, ...], dropout: float):
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


# name -> (network class, its preset arguments): each preset's widths are written here only.
PRESETS: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "base": (BaseNet, {"widths": (16, 32, 20, 32, 16, 16)}),  # 18,448 parameters, the seed document's table
    "tiny": (BaseNet, {"widths": (8, 16, 10, 16, 16, 16)}),  # 7,736: the same shape, thinner
    "micro": (MicroNet, {"widths": (8, 8, 12, 12)}),  # 3,968
    "cnn": (CNN, {}),  # a family: its arguments are the shape (cnn.py); by default micro's, 3,968
}

# Old names, still understood: the base network was called "seed", as the random seed (--seed) is.
OLD_NAMES = {"seed": "base"}


def current(name: str) -> str:
    """The name a built-in goes by now: base for seed, itself otherwise."""
    return OLD_NAMES.get(name, name)
