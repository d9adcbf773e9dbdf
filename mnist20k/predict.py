"""Reading a photo or scan of one handwritten digit the way MNIST's own digits were prepared."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k.data import normalize
from mnist20k.errors import Mnist20kError
from mnist20k.files import reason

INK_THRESHOLD = 0.25  # of the ink's full strength: fainter pixels do not count towards the bounding box
MAX_PIXELS = 50_000_000  # no photo of a digit needs more (a phone camera gives 12-50 MP); larger is refused unread
WORK_SIDE = 448  # the longer side an image is shrunk to first, in one-byte pixels: 16x the 28 it ends at


@dataclass
class Prediction:
    path: str
    digit: int
    top3: list[tuple[int, float]]  # (digit, probability), most likely first

    def to_dict(self) -> dict:
        return {"file": self.path, "digit": self.digit, "top3": [{"digit": d, "p": p} for d, p in self.top3]}


def read_digit(path: Path | str | BinaryIO, name: str | None = None) -> torch.Tensor:
    """A (28, 28) float image in [0, 1] with the ink bright, prepared as MNIST was: cropped to the
    ink, scaled to fit 20x20 keeping its aspect ratio, and placed with its centre of mass at the
    centre of a 28x28 field. `path` is a file, or the image's bytes in a file object (then `name`
    says what it is in messages)."""
    name = name or str(path)
    gray = _read_gray(path, name)
    # Ink is whatever differs from the paper; the paper is what the border mostly shows.
    border = torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    paper = border.median()
    ink = (paper - gray) if paper > 0.5 else (gray - paper)
    ink = ink.clamp(min=0)
    if ink.max() <= 0.05:
        raise Mnist20kError(f"{name}: no ink found: the image is blank")
    ink = ink / ink.max()
    rows, cols = torch.nonzero(ink > INK_THRESHOLD, as_tuple=True)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return _centre(_fit_20(ink))


def _read_gray(path: Path | str | BinaryIO, name: str) -> torch.Tensor:
    """(H, W) float in [0, 1], about WORK_SIDE pixels on its longer side at most, from a PNG (8 or 16
    bits, grey or colour, with or without transparency) or a JPEG.

    The file is untrusted: its size is read from its header and checked before anything is decoded,
    and the decoded image goes to grey and shrinks while its pixels are bytes, before any float work.
    """
    import warnings

    import numpy as np
    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow warns of an image over its own limit; ours, below, is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=("PNG", "JPEG"))  # reads the header only
        with image:
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise Mnist20kError(
                    f"{name}: {w:,} x {h:,} pixels ({w * h / 1e6:,.0f} MP) is over the limit of "
                    f"{MAX_PIXELS / 1e6:.0f} MP for a photo of a digit; not decoded"
                )
            image.draft("L", (WORK_SIDE, WORK_SIDE))  # a JPEG decodes at 1/2 to 1/8 of its size at once
            gray, alpha = _gray_bytes(image)
    except FileNotFoundError:
        raise Mnist20kError(f"{name}: no such file") from None
    except (IsADirectoryError, PermissionError) as e:
        raise Mnist20kError(f"{name}: {reason(e)}") from None
    except Image.DecompressionBombError:  # over twice Pillow's own limit: refused by Image.open, size untold
        raise Mnist20kError(
            f"{name}: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:,.0f} MP, far over the limit of {MAX_PIXELS / 1e6:.0f} MP "
            "for a photo of a digit; not decoded"
        ) from None
    except (OSError, SyntaxError, ValueError):  # Pillow's words for a broken file (UnidentifiedImageError is one)
        raise Mnist20kError(f"{name}: not a readable PNG or JPEG (truncated, corrupt or another format)") from None
    factor = max(1, math.ceil(max(gray.size) / WORK_SIDE))
    gray = torch.from_numpy(np.array(gray.reduce(factor))).float() / 255  # box average of factor x factor
    if alpha is None:
        return gray
    return _over_paper(gray, torch.from_numpy(np.array(alpha.reduce(factor))).float() / 255)


def _gray_bytes(image) -> tuple:
    """The image as 8-bit grey, and its 8-bit alpha if it has transparency (else None)."""
    import numpy as np
    from PIL import Image

    if image.mode.startswith("I"):  # 16-bit grey: Pillow's "L" would clip at 255 rather than scale
        return Image.fromarray((np.asarray(image) >> 8).astype(np.uint8)), None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        gray, alpha = image.convert("LA").split()
        return gray, alpha
    return image.convert("L"), None


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
def probabilities(model: nn.Module, digits: torch.Tensor) -> torch.Tensor:
    """(N, 10) probabilities of each digit; digits: (N, 28, 28) in [0, 1], ink bright."""
    model.eval()
    return F.softmax(model(normalize(digits[:, None])).float(), dim=1)  # of logits or log-probabilities alike


def predict(model: nn.Module, digits: torch.Tensor, paths: list[str]) -> list[Prediction]:
    """digits: (N, 28, 28) in [0, 1], ink bright."""
    top = probabilities(model, digits).topk(3, dim=1)
    return [
        Prediction(path, int(idx[0]), [(int(i), float(p)) for i, p in zip(idx, val, strict=True)])
        for path, idx, val in zip(paths, top.indices, top.values, strict=True)
    ]
