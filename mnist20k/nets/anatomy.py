"""What `summary` tells about any network beyond torchinfo's table: the receptive field of its last
spatial feature map, and the small-CNN challenge's usual rules (BatchNorm, Dropout, a GAP or fully
connected head, the parameter budget).

Both come from running the network, not from reading its code, so they hold for any architecture.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

PROBES = 128  # random images behind one receptive-field measurement (see _field_and_shapes)

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
AVERAGE_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)


@dataclass(frozen=True)
class ReceptiveField:
    layer: str  # the module whose output is the last spatial feature map
    grid: tuple[int, int]  # that map's height and width
    pixels: tuple[int, int]  # height and width of the input region one position of it sees
    clipped: bool  # the region reaches the image's edge: the field is at least this large


@dataclass(frozen=True)
class Anatomy:
    batchnorm: int  # BatchNorm layers
    dropout: int  # Dropout layers
    gap: list[str]  # average-pooling layers that leave 1x1: global average pooling
    linear: list[str]  # fully connected layers
    field: ReceptiveField | None  # None: no spatial feature map past the input, or not measurable
    field_note: str = ""  # why there is no field
    pooled: str = ""  # global pooling done in forward() rather than by a layer: "16×6×6 map to 16 values"


def inspect_network(model: nn.Module) -> Anatomy:
    """The network's layers and its receptive field; the model itself is left untouched."""
    modules = dict(model.named_modules())
    gap = []
    for name, m in modules.items():
        if isinstance(m, AVERAGE_POOLS):
            gap.append(name)  # narrowed to those that pool to 1x1 once the field's pass has seen shapes
    field, note, shapes, pooled = _measure(model)
    gap = [name for name in gap if shapes.get(name, (0, 0))[-2:] == (1, 1)]
    return Anatomy(
        batchnorm=sum(isinstance(m, BATCHNORMS) for m in modules.values()),
        dropout=sum(isinstance(m, DROPOUTS) for m in modules.values()),
        gap=gap,
        linear=[name for name, m in modules.items() if isinstance(m, nn.Linear)],
        field=field,
        field_note=note,
        pooled=pooled,
    )


def _measure(model: nn.Module) -> tuple[ReceptiveField | None, str, dict[str, tuple[int, ...]], str]:
    try:
        return _field_and_shapes(model)
    except Exception as e:  # a network that will not run in float64 on the CPU: the table still prints
        first = str(e).splitlines()[0] if str(e) else ""
        return None, f"not measured ({type(e).__name__}: {first})", {}, ""


def _field_and_shapes(model: nn.Module):
    """Back-propagate from one position of the last spatial feature map to the input: the input pixels
    with a non-zero gradient are the ones that position sees. A max-pool passes gradient to one pixel
    of each window and a ReLU none where it is off, so one image shows only part of the field; the union
    over PROBES random images (independent in eval mode) finds all of it. float64 on a copy, so the
    user's network is left as it was."""
    net = copy.deepcopy(model).to("cpu", torch.float64).eval()
    seen: list[tuple[str, torch.Tensor]] = []
    taken: list[tuple[int, tuple[int, ...]]] = []  # (outputs seen before, shape) of each layer's input
    hooks = []
    for name, m in net.named_modules():
        if name:  # the network itself: its output is the scores
            hooks.append(m.register_forward_hook(lambda _m, _in, out, name=name: seen.append((name, out))))
            hooks.append(m.register_forward_pre_hook(lambda _m, args: taken.append((len(seen), _shape(args)))))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(PROBES, 1, 28, 28, dtype=torch.float64, generator=gen, requires_grad=True)
    try:
        scores = net(x)
    finally:
        for hook in hooks:
            hook.remove()
    shapes = {name: tuple(out.shape) for name, out in seen if isinstance(out, torch.Tensor)}
    maps = [
        (name, out)
        for name, out in seen
        if isinstance(out, torch.Tensor)
        and out.dim() == 4
        and len(out) == PROBES
        and out.shape[2] * out.shape[3] > 1
        and out.requires_grad
    ]
    if not maps:
        return None, "no spatial feature map: every layer's output already sees the whole image", shapes, ""
    name, fmap = maps[-1]  # hooks fire as modules finish: a block's own hook comes after its layers'
    h, w = fmap.shape[2:]
    pooled = _pooled_in_forward(fmap, [s for after, s in taken if after >= _last_index(seen, fmap)], scores)
    (grad,) = torch.autograd.grad(fmap[:, :, (h - 1) // 2, (w - 1) // 2].sum(), x)
    seen_pixels = grad.abs().sum(dim=(0, 1)) > 0  # (28, 28)
    if not seen_pixels.any():
        return None, "not measured: no gradient reached the input", shapes, pooled
    rows = seen_pixels.any(1).nonzero().flatten()
    cols = seen_pixels.any(0).nonzero().flatten()
    top, bottom, left, right = rows[0].item(), rows[-1].item(), cols[0].item(), cols[-1].item()
    clipped = top == 0 or left == 0 or bottom == 27 or right == 27
    field = ReceptiveField(name, (h, w), (bottom - top + 1, right - left + 1), clipped)
    return field, "", shapes, pooled


def _shape(args: tuple) -> tuple[int, ...]:
    return tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else ()


def _last_index(seen: list[tuple[str, torch.Tensor]], fmap: torch.Tensor) -> int:
    """How many outputs had been seen once `fmap` was: inputs taken after that come after the map."""
    return max(i + 1 for i, (_, out) in enumerate(seen) if out is fmap)


def _pooled_in_forward(fmap: torch.Tensor, later: list[tuple[int, ...]], scores) -> str:
    """Global pooling that no layer does: after the last spatial map (B, C, H, W), a layer takes C values an
    image, or the network returns them as its scores (`F.adaptive_avg_pool2d(x, 1)` or `x.mean((2, 3))` in
    forward()). Seen from the shapes alone, so whether it averages or takes the maximum is not told."""
    b, c, h, w = fmap.shape
    pooled = [(b, c), (b, c, 1, 1)]
    final = tuple(scores.shape) if isinstance(scores, torch.Tensor) else ()
    if any(shape in pooled for shape in later) or (not later and final == (b, c)):
        return f"global pooling in forward() ({c}×{h}×{w} map to {c} values)"
    return ""
