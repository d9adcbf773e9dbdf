"""MNIST on disk -> uint8 tensors on the training device, and batched augmentation on that device."""

from __future__ import annotations

import math
import os
import shutil
import struct
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist20k.errors import DataError
from mnist20k.files import reason

MEAN, STD = 0.1307, 0.3081  # of the 60,000 training images, scaled to [0, 1]
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES[True] + FILES[False]
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # IDX headers: unsigned bytes, 3 dims / 1 dim


def default_data_dir() -> Path:
    """$MNIST20K_DATA_DIR if set, else a per-user cache folder."""
    if env := os.environ.get("MNIST20K_DATA_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnist20k"


def raw_folder(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"  # torchvision's layout


def load_split(
    root: Path | str | None, train: bool, device: torch.device | str = "cpu", download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one split, on `device`.

    Only the split's two files are opened: a run scored on held-out training images never opens the test
    files, and needs none. Downloads the four files into `root` only when the split's are missing; a
    complete folder is only read, so it may be read-only.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root = Path(root) if root is not None else default_data_dir()
    raw = raw_folder(root)
    if any(not (raw / name).is_file() for name in FILES[train]):
        if not download:
            raise DataError(_missing_message(raw))
        _download(root)
    images_file, labels_file = (raw / name for name in FILES[train])
    try:
        n, rows, cols = _check_idx(images_file, IMAGE_MAGIC, 3)
        (n_labels,) = _check_idx(labels_file, LABEL_MAGIC, 1)
    except OSError as e:
        raise DataError(f"cannot read {e.filename}: {reason(e)}") from None
    if (rows, cols) != (28, 28):
        raise DataError(f"{images_file} holds {rows}x{cols} images, not 28x28: not MNIST")
    if n != n_labels:
        raise DataError(f"{images_file.name} has {n:,} images but {labels_file.name} has {n_labels:,} labels")
    try:
        images, labels = read_image_file(str(images_file)), read_label_file(str(labels_file))
    except Exception as e:  # torchvision reports bad files as bare assertions
        raise DataError(f"cannot read MNIST from {raw}: {e or type(e).__name__}") from None
    if labels.numel() and int(labels.max()) > 9:
        raise DataError(f"{labels_file} holds labels above 9: not MNIST labels")
    return images.unsqueeze(1).to(device), labels.long().to(device)


def _check_idx(path: Path, magic: int, ndim: int) -> list[int]:
    """The dimensions from an IDX file's header, after checking its magic number and size."""
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        header = f.read(header_size)
    if len(header) < header_size:
        raise DataError(f"{path} is truncated ({len(header)} bytes); download it again")
    found, *dims = struct.unpack(f">{1 + ndim}i", header)
    if found != magic:
        raise DataError(f"{path} has magic number {found}, expected {magic}: not this MNIST file")
    expected = header_size + math.prod(dims)
    size = path.stat().st_size
    if size != expected:
        raise DataError(
            f"{path} has {size:,} bytes but its header promises {expected:,}: truncated or corrupt; download it again"
        )
    return dims


def _download(root: Path) -> None:
    """torchvision's download of the four files into root/MNIST/raw; a failed one takes away the folders it
    made, so that a mistyped --data-dir leaves nothing behind."""
    from torchvision.datasets import MNIST

    made = next((folder for folder in _folders(root) if not folder.exists()), None)
    try:
        MNIST(str(root), train=True, download=True)
    except Exception as e:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        reason = " ".join(str(e).split())  # torchvision's message spans lines: one line per error
        raise DataError(f"{_missing_message(raw_folder(root))} (download failed: {reason})") from None


def _folders(root: Path) -> list[Path]:
    """The folders a download into root may make, outermost first: root's missing parents, root, root/MNIST
    and root/MNIST/raw."""
    root = Path(os.path.abspath(root))
    return [*reversed(root.parents), root, root / "MNIST", raw_folder(root)]


def _missing_message(raw: Path) -> str:
    return (
        f"MNIST is not in {raw}: put the four files {', '.join(ALL_FILES)} there (uncompressed), "
        "or point --data-dir or MNIST20K_DATA_DIR at a folder that holds MNIST/raw/"
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images -> float32, zero mean and unit variance over the training set."""
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return (images - MEAN) / STD


def augment(
    images: torch.Tensor, rotate: float, translate: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each image by its own angle in [-rotate, rotate] degrees and shift it by up to
    `translate` pixels per axis, in one affine_grid/grid_sample call for the whole batch.

    images: (B, 1, H, W) float in [0, 1]; the zeros that come in from outside are black paper,
    which is why this runs before normalize().
    """
    if rotate == 0 and translate == 0:
        return images
    b, _, h, w = images.shape
    kw = {"device": images.device, "generator": generator}
    angle = (torch.rand(b, **kw) * 2 - 1) * math.radians(rotate)
    shift = (torch.rand(b, 2, **kw) * 2 - 1) * translate
    tx, ty = shift[:, 0] * (2 / w), shift[:, 1] * (2 / h)  # pixels -> grid units, with no host tensor
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
