"""Small MNIST-shaped data the tests write themselves, and helpers to run the CLI in-process."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import torch

from mnist20k.data import FILES


def write_idx_images(path: Path, images: torch.Tensor) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">4i", 2051, n, rows, cols) + images.to(torch.uint8).numpy().tobytes())


def write_idx_labels(path: Path, labels: torch.Tensor) -> None:
    path.write_bytes(struct.pack(">2i", 2049, len(labels)) + labels.to(torch.uint8).numpy().tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is where a bright block sits: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    images = (torch.rand(n, 28, 28, generator=g) * 40).to(torch.uint8)
    for i, label in enumerate(labels.tolist()):
        r, c = 4 + (label // 5) * 12, 3 + (label % 5) * 5
        images[i, r : r + 8, c : c + 4] = 255
    return images, labels


def make_mnist_dir(root: Path, n_train: int = 512, n_test: int = 200) -> Path:
    """A data folder in torchvision's layout (root/MNIST/raw/) holding synthetic IDX files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        images, labels = synthetic_digits(n, seed=int(train))
        write_idx_images(raw / FILES[train][0], images)
        write_idx_labels(raw / FILES[train][1], labels)
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return make_mnist_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture
def fresh_data_dir(tmp_path) -> Path:
    """A data folder a test may damage."""
    return make_mnist_dir(tmp_path / "data")


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Tests never reach the network: a download attempt fails at once, as it does offline."""
    from torchvision.datasets import MNIST

    def offline(self):
        # torchvision's own offline error, which spans lines
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://ossci-datasets.s3.amazonaws.com/mnist/, "
            "got:\n<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(MNIST, "download", offline)


@pytest.fixture
def real_mnist() -> Path:
    path = os.environ.get("MNIST20K_DATA_DIR")
    if not path:
        pytest.skip("needs real MNIST: set MNIST20K_DATA_DIR to a folder holding MNIST/raw/")
    return Path(path)


def one_error_line(result, code: int, text: str) -> str:
    """The CLI failed with `code` and one line on stderr that holds `text`, and no traceback; that line."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output
    return lines[0]
