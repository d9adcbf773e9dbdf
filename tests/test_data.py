import math

import pytest
import torch
from conftest import synthetic_digits

from mnist20k.data import FILES, augment, load_split, normalize, raw_folder
from mnist20k.errors import DataError


def test_load_split_gives_uint8_images_and_labels(data_dir):
    images, labels = load_split(data_dir, train=True)
    assert images.shape == (512, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (512,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))
    test_images, _ = load_split(data_dir, train=False)
    assert test_images.shape == (200, 1, 28, 28)


def test_complete_data_folder_is_only_read(data_dir):
    before = {p: p.stat().st_mtime_ns for p in data_dir.rglob("*")}
    load_split(data_dir, train=True)
    load_split(data_dir, train=False)
    assert {p: p.stat().st_mtime_ns for p in data_dir.rglob("*")} == before


def test_data_dir_comes_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv("MNIST20K_DATA_DIR", str(data_dir))
    images, _ = load_split(None, train=False)
    assert len(images) == 200


def test_missing_files_name_all_four_and_the_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_split(tmp_path, train=True)
    message = str(e.value)
    for name in FILES[True] + FILES[False]:
        assert name in message
    assert str(raw_folder(tmp_path)) in message
    assert "download failed" in message


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


def test_translation_moves_the_centre_of_mass_by_at_most_the_shift():
    g = torch.Generator().manual_seed(0)
    x = bar_images(256)
    out = augment(x, rotate=0.0, translate=2.0, generator=g)
    xs = torch.arange(28.0)
    com = lambda t: (t[:, 0].sum(1) * xs).sum(1) / t[:, 0].sum((1, 2))  # noqa: E731
    shift = (com(out) - com(x)).abs()
    assert shift.max() <= 2.05 and shift.max() > 1.0


def test_augment_keeps_shape_order_and_black_background():
    g = torch.Generator().manual_seed(0)
    images, labels = synthetic_digits(32, seed=0)
    x = images.unsqueeze(1).float() / 255
    out = augment(x, rotate=7.0, translate=2.0, generator=g)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0  # zeros come in from outside, not the normalized mean
    # Each output stays closest to an input of its own digit: labels stay attached.
    nearest = torch.cdist(out.flatten(1), x.flatten(1)).argmin(1)
    assert torch.equal(labels[nearest], labels)
    assert augment(x, rotate=0.0, translate=0.0) is x


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
