import math

import pytest
import torch
from conftest import synthetic_digits, unprivileged

from mnist20k.data import augment, load_split, normalize


def test_load_split_gives_uint8_images_and_labels(data_dir):
    images, labels = load_split(data_dir, train=True)
    assert images.shape == (512, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (512,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))
    test_images, _ = load_split(data_dir, train=False)
    assert test_images.shape == (200, 1, 28, 28)


READ_BOTH = """import sys
from mnist20k.data import load_split

print(len(load_split(sys.argv[1], train=True)[0]), len(load_split(sys.argv[1], train=False)[0]))
"""


def test_a_complete_data_folder_is_only_read_and_may_be_read_only(fresh_data_dir, modes_hold):
    """The folder and its files made read-only for everyone, read by a user file modes hold for: opening a file
    for writing, or making anything in the folder, fails there."""
    paths = [fresh_data_dir, *fresh_data_dir.rglob("*")]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        done = unprivileged(["-c", READ_BOTH, fresh_data_dir])
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["512", "200"]


def test_data_dir_comes_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv("MNIST20K_DATA_DIR", str(data_dir))
    images, _ = load_split(None, train=False)
    assert len(images) == 200


def test_normalize_gives_zero_mean_unit_variance_at_the_training_statistics():
    x = torch.tensor([0.1307, 0.1307 + 0.3081])
    torch.testing.assert_close(normalize(x), torch.tensor([0.0, 1.0]))
    assert normalize(torch.tensor([255], dtype=torch.uint8)).item() == pytest.approx((1 - 0.1307) / 0.3081)


def bar_images(n: int) -> torch.Tensor:
    """A long horizontal bar through the centre of each image."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 13:15, 4:24] = 1.0
    return x


def orientation_degrees(images: torch.Tensor) -> torch.Tensor:
    """Angle of each image's principal axis, from its second moments."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    w = images[:, 0]
    m = w.sum((1, 2))
    cx, cy = (w * xs).sum((1, 2)) / m, (w * ys).sum((1, 2)) / m
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    mxx, myy, mxy = (w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2)), (w * dx * dy).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mxy, mxx - myy))


def test_rotation_stays_within_the_angle_and_varies_per_image():
    g = torch.Generator().manual_seed(0)
    out = augment(bar_images(256), rotate=7.0, translate=0.0, generator=g)
    angles = orientation_degrees(out)
    assert angles.abs().max() <= 7.5
    assert angles.abs().max() >= 5.0  # the whole range is used
    assert angles.std() > 2.0  # each image draws its own angle


def test_translation_moves_the_centre_of_mass_by_at_most_the_shift_on_each_axis():
    g = torch.Generator().manual_seed(0)
    x = bar_images(256)
    out = augment(x, rotate=0.0, translate=2.0, generator=g)
    grid = torch.arange(28.0)

    def centre(t: torch.Tensor, along_rows: bool) -> torch.Tensor:
        profile = t[:, 0].sum(2 if along_rows else 1)  # ink per row (y) or per column (x)
        return (profile * grid).sum(1) / profile.sum(1)

    dx, dy = (centre(out, rows) - centre(x, rows) for rows in (False, True))
    for shift in (dx, dy):
        assert shift.abs().max() <= 2.05 and shift.abs().max() > 1.5  # the whole range is used
    assert abs(torch.corrcoef(torch.stack([dx, dy]))[0, 1]) < 0.2  # each axis draws its own shift


def test_augment_keeps_shape_order_and_black_background():
    g = torch.Generator().manual_seed(0)
    images, labels = synthetic_digits(32, seed=0)
    x = images.unsqueeze(1).float() / 255
    out = augment(x, rotate=7.0, translate=2.0, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    # Each output stays closest to an input of its own digit: labels stay attached.
    nearest = torch.cdist(out.flatten(1), x.flatten(1)).argmin(1)
    assert torch.equal(labels[nearest], labels)
    assert augment(x, rotate=0.0, translate=0.0) is x

    # What comes in from outside a moved image is black paper, 0 before normalize(): white pages
    # moved by up to 2 pixels turn black at their edges and stay white in the middle.
    paper = augment(torch.ones(64, 1, 28, 28), rotate=7.0, translate=2.0, generator=g)
    assert paper.amin() == 0.0
    edges = torch.cat([paper[:, 0, [0, -1], :].flatten(1), paper[:, 0, :, [0, -1]].flatten(1)], 1)
    assert (edges < 1).any(1).all()  # every page moved, each by its own draw: an edge of each darkened
    assert torch.allclose(paper[:, :, 6:22, 6:22], torch.ones(1), atol=1e-5)


def test_augment_is_reproducible_from_the_generator():
    x = torch.rand(8, 1, 28, 28)
    a = augment(x, 7.0, 2.0, torch.Generator().manual_seed(3))
    b = augment(x, 7.0, 2.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.mnist
def test_real_mnist_has_the_documented_shape(real_mnist):
    images, labels = load_split(real_mnist, train=True)
    assert images.shape == (60_000, 1, 28, 28)
    assert labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mean = images.float().div(255).mean().item()
    assert math.isclose(mean, 0.1307, abs_tol=1e-4)
