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
    gray = _read_gray(path)
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


def _read_gray(path: Path | str) -> torch.Tensor:
    """(H, W) float in [0, 1] from a PNG (8 or 16 bits, grey or colour, with or without transparency) or a JPEG."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise Mnist20kError(f"{path}: {'no such file' if isinstance(e, FileNotFoundError) else e.strerror}") from None
    png = data.startswith(b"\x89PNG\r\n\x1a\n")
    try:  # JPEG has no transparency to keep
        mode = ImageReadMode.GRAY_ALPHA if png else ImageReadMode.GRAY
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except Exception:
        raise Mnist20kError(f"{path}: not a readable PNG or JPEG (truncated, corrupt or another format)") from None
    image = image.float() / (65535 if image.dtype == torch.uint16 else 255)
    return _over_paper(image[0], image[1]) if len(image) == 2 else image[0]


def _over_paper(gray: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Transparent pixels become paper of the colour that sets the opaque strokes off: drawing apps save
    strokes of any colour on a transparent background, which decodes as black."""
    if alpha.min() >= 1:
        return gray
    opaque = alpha > 0.5
    paper = 1.0 if not opaque.any() or gray[opaque].mean() < 0.5 else 0.0
    return gray * alpha + paper * (1 - alpha)


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
