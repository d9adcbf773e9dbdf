"""Reading a photo or scan of one handwritten digit the way MNIST's own digits were prepared."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k.data import normalize
from mnist20k.errors import Mnist20kError

INK_THRESHOLD = 0.25  # of the ink's full strength: fainter pixels do not count towards the bounding box


@dataclass
class Prediction:
    path: str
    digit: int
    top3: list[tuple[int, float]]  # (digit, probability), most likely first

    def to_dict(self) -> dict:
        return {"file": self.path, "digit": self.digit, "top3": [{"digit": d, "p": p} for d, p in self.top3]}


def read_digit(path: Path | str) -> torch.Tensor:
    """A (28, 28) float image in [0, 1] with the ink bright, prepared as MNIST was: cropped to the
    ink, scaled to fit 20x20 keeping its aspect ratio, and placed with its centre of mass at the
    centre of a 28x28 field."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        gray = decode_image(str(path), mode=ImageReadMode.GRAY)[0].float() / 255  # (H, W)
    except Exception as e:
        reason = "no such file" if not Path(path).exists() else f"not a readable PNG or JPEG ({type(e).__name__})"
        raise Mnist20kError(f"{path}: {reason}") from None
    # Ink is whatever differs from the paper; the paper is what the border mostly shows.
    border = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = border.median()
    ink = (paper - gray) if paper > 0.5 else (gray - paper)
    ink = ink.clamp(min=0)
    if ink.max() <= 0.05:
        raise Mnist20kError(f"{path}: no ink found: the image is blank")
    ink = ink / ink.max()
    rows, cols = torch.nonzero(ink > INK_THRESHOLD, as_tuple=True)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return _centre(_fit_20(ink))


def _fit_20(ink: torch.Tensor) -> torch.Tensor:
    h, w = ink.shape
    scale = 20 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    # antialias: shrinking a large photo without it keeps only every n-th pixel of thin strokes
    return F.interpolate(ink[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]


def _centre(digit: torch.Tensor) -> torch.Tensor:
    h, w = digit.shape
    mass = digit.sum()
    cy = (digit.sum(1) * torch.arange(h)).sum() / mass
    cx = (digit.sum(0) * torch.arange(w)).sum() / mass
    top = int(round(13.5 - cy.item()))
    left = int(round(13.5 - cx.item()))
    top, left = min(max(top, 0), 28 - h), min(max(left, 0), 28 - w)
    field = torch.zeros(28, 28)
    field[top : top + h, left : left + w] = digit
    return field


@torch.no_grad()
def predict(model: nn.Module, digits: torch.Tensor, paths: list[str]) -> list[Prediction]:
    """digits: (N, 28, 28) in [0, 1], ink bright."""
    model.eval()
    probs = model(normalize(digits[:, None])).exp()
    top = probs.topk(3, dim=1)
    return [
        Prediction(path, int(idx[0]), [(int(i), float(p)) for i, p in zip(idx, val, strict=True)])
        for path, idx, val in zip(paths, top.indices, top.values, strict=True)
    ]
