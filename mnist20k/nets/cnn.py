"""`cnn`: a family of small CNNs whose constructor arguments are the architecture, so that tune can search the
shape and not only the settings (`--search arg.stage2=(12,12),(16,16,16)`).

    input (1x28x28) -> stage1 blocks -> [1x1 transition] -> 2x2 max-pool -> stage2 blocks
                    -> [the last block again, same weights, `shared` times in all] -> head -> 10 scores

A block is conv -> ReLU -> BatchNorm (-> Dropout2d), in the seed's order, with one of three convs:
plain 3x3 (9·i·o weights), depthwise-separable (3x3 per channel, then 1x1 across: 9·i + i·o), or factorised
(3x1 then 1x3: 3·i·o + 3·o·o). The head is a 1x1 conv after global average pooling (`gap`, as in base) or a 3x3
conv straight to ten class maps that are then averaged (`maps`, as in micro).

A shape that cannot work is refused by the constructor, naming the argument: a map that shrinks below 1x1, a
width below 1, a shared block whose input is not as wide as its output.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

CONVS = ("plain", "separable", "factorised")
HEADS = ("gap", "maps")


class ShapeError(ValueError):
    """Arguments each valid alone that together cannot work: a map shrunk away, a shared block that cannot be."""


def conv3x3(kind: str, c_in: int, c_out: int, pad: int) -> nn.Module:
    """A 3x3 receptive field from c_in to c_out channels, without bias (BatchNorm follows), in one of CONVS."""
    if kind == "plain":
        return nn.Conv2d(c_in, c_out, 3, padding=pad, bias=False)
    if kind == "separable":
        return nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, padding=pad, groups=c_in, bias=False),  # each channel's own 3x3
            nn.Conv2d(c_in, c_out, 1, bias=False),  # then mixed across channels
        )
    return nn.Sequential(  # factorised
        nn.Conv2d(c_in, c_out, (3, 1), padding=(pad, 0), bias=False),
        nn.Conv2d(c_out, c_out, (1, 3), padding=(0, pad), bias=False),
    )


class Block(nn.Sequential):
    def __init__(self, kind: str, c_in: int, c_out: int, pad: int, affine: bool, dropout: float):
        layers = [conv3x3(kind, c_in, c_out, pad), nn.ReLU(), nn.BatchNorm2d(c_out, affine=affine)]
        super().__init__(*layers, *([nn.Dropout2d(dropout)] if dropout > 0 else []))


class CNN(nn.Module):
    """The family. Its defaults are micro's shape (3,968 parameters); docs/your-own-network.md spells base's,
    tiny's and micro's as --arg lines.

    stage1, stage2: the output widths of the blocks before and after the pool (their count is their length)
    conv1, conv2:   each stage's conv: plain, separable or factorised
    transition:     the width of a 1x1 conv before the pool; 0 for none
    head:           gap (global average pool, then a 1x1 conv to 10) or maps (a 3x3 conv to 10 maps, averaged)
    pad:            the padding of stage1's convs (stage2's have none)
    affine:         BatchNorm with its scale and shift (2 parameters a channel), or without
    shared:         how many times the last block of stage2 runs, with the same weights each time (each pass
                    keeps BatchNorm statistics of its own: buffers, not parameters)
    """

    def __init__(
        self,
        stage1: tuple[int, ...] = (8, 8),
        stage2: tuple[int, ...] = (12, 12),
        conv1: str = "plain",
        conv2: str = "plain",
        transition: int = 0,
        head: str = "maps",
        pad: int = 0,
        affine: bool = True,
        shared: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        stage1, stage2 = _widths("stage1", stage1), _widths("stage2", stage2)
        for name, value, allowed in (("conv1", conv1, CONVS), ("conv2", conv2, CONVS), ("head", head, HEADS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is none of {', '.join(allowed)}")
        _whole("transition", transition, low=0)
        _whole("pad", pad, low=0, high=1)
        _whole("shared", shared, low=1)
        if not isinstance(affine, bool):
            raise ValueError(f"affine is true or false, not {affine!r}")
        if shared > 1 and (stage2[-2] if len(stage2) > 1 else transition or stage1[-1]) != stage2[-1]:
            raise ShapeError(
                f"shared={shared} runs stage2's last block on its own output: its input must be as wide as its "
                f"output ({stage2[-1]}), so give stage2 two equal last widths"
            )
        side = _sides(stage1, stage2, transition, head, pad, shared)

        def block(kind, c_in, c_out, p):
            return Block(kind, c_in, c_out, p, affine, dropout)

        widths1 = (1, *stage1)
        self.stage1 = nn.Sequential(*(block(conv1, i, o, pad) for i, o in itertools.pairwise(widths1)))
        c = stage1[-1]
        # The 1x1 conv mixes channels cheaply before the pool halves the image (base's transition).
        self.transition = nn.Conv2d(c, transition, 1, bias=False) if transition else nn.Identity()
        self.pool = nn.MaxPool2d(2, 2)
        widths2 = (transition or c, *stage2)
        self.stage2 = nn.Sequential(*(block(conv2, i, o, 0) for i, o in itertools.pairwise(widths2)))
        self.shared = shared
        c = stage2[-1]
        # One BatchNorm's running statistics would mix the activations of every pass, and eval mode would apply
        # that mix to each; so each further pass keeps its own, with the block's scale and shift.
        self.passes = nn.ModuleList(nn.BatchNorm2d(c, affine=False) for _ in range(shared - 1))
        self.classify = nn.Conv2d(c, 10, 1 if head == "gap" else 3, bias=False)
        self.head = head
        self.side = side  # the side of the map the scores average: the class maps' for head=maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.transition(self.stage1(x)))
        x = self.stage2(x)
        for stats in self.passes:  # depth at no cost in parameters
            x = self._again(x, stats)
        if self.head == "gap":
            x = self.classify(F.adaptive_avg_pool2d(x, 1))
        else:
            x = F.adaptive_avg_pool2d(self.classify(x), 1)
        return F.log_softmax(x.flatten(1), dim=-1)  # (B, 10)

    def _again(self, x: torch.Tensor, stats: nn.BatchNorm2d) -> torch.Tensor:
        """stage2's last block on its own output: its conv, ReLU, its BatchNorm's scale and shift over the
        statistics of this pass, its dropout."""
        conv, _, norm, *dropout = self.stage2[-1]
        x = F.relu(conv(x))
        x = F.batch_norm(
            x, stats.running_mean, stats.running_var, norm.weight, norm.bias, self.training, stats.momentum, stats.eps
        )
        return dropout[0](x) if dropout else x


def _widths(name: str, value) -> tuple[int, ...]:
    """A stage's widths: a tuple or list of whole numbers of at least 1 (one number is one block)."""
    widths = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(widths, tuple | list) or not widths:
        raise ValueError(f"{name} is the widths of its blocks, one or more whole numbers such as 8,8; not {value!r}")
    for w in widths:
        _whole(name, w, low=1)
    return tuple(widths)


def _whole(name: str, value, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        span = f"{low} or {high}" if high == low + 1 else f"at least {low}" if high is None else f"{low} to {high}"
        raise ValueError(f"{name} takes whole numbers {span}, not {value!r}")


def _sides(stage1, stage2, transition: int, head: str, pad: int, shared: int) -> int:
    """The side of the map the scores average, block by block; a map that would shrink below 1x1 is refused, with
    the argument that shrank it."""
    side = 28

    def shrink(by: int, name: str, where: str) -> None:
        nonlocal side
        if side - by < 1:
            raise ShapeError(
                f"{name}: the map is {side}x{side} before {where}, which leaves nothing; "
                "use fewer blocks, or pad=1 in stage1"
            )
        side -= by

    for i in range(len(stage1)):
        shrink(2 - 2 * pad, "stage1", f"its block {i + 1}")
    if side < 2:
        raise ShapeError(f"stage1: its {side}x{side} map cannot be pooled")
    side //= 2
    for i in range(len(stage2)):
        shrink(2, "stage2", f"its block {i + 1}")
    for k in range(shared - 1):
        shrink(2, "shared", f"run {k + 2} of the shared block")
    if head == "maps":
        shrink(2, "head", "the 3x3 conv to the class maps")
    return side
