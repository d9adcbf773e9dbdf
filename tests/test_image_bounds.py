"""predict reads files from anywhere: a decompression bomb is refused unread, and a large photo is read
within a bounded memory, to the same digit as a small one."""

import subprocess
import sys
import warnings

import pytest
from conftest import bomb
from PIL import Image, ImageDraw, ImageFile

from mnist20k.errors import Mnist20kError
from mnist20k.predict import MAX_PIXELS, read_digit


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    bomb(path)
    return path


def test_a_400_megapixel_bomb_is_refused_from_its_header_without_decoding(bomb_png, monkeypatch):
    assert bomb_png.stat().st_size < 2_000_000

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(Mnist20kError) as refused:
        read_digit(bomb_png)
    assert str(refused.value) == (
        f"{bomb_png}: over 179 MP, far over the limit of 50 MP for a photo of a digit; not decoded"
    )


def test_an_image_over_the_limit_but_under_pillows_is_refused_with_its_size_and_no_warning(tmp_path, monkeypatch):
    """100 MP: Pillow opens it with a DecompressionBombWarning of its own; the refusal is ours, in one line."""
    path = tmp_path / "big.png"
    bomb(path, side=10_000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a, **k: pytest.fail("the image was decoded"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the read
        with pytest.raises(Mnist20kError) as refused:
            read_digit(path)
    assert str(refused.value) == (
        f"{path}: 10,000 x 10,000 pixels (100 MP) is over the limit of 50 MP for a photo of a digit; not decoded"
    )


def photo(path, size, mode="RGB") -> None:
    """A dark 7 drawn across a large light sheet, off-centre, as a phone photo of a page would be."""
    w, h = size
    image = Image.new(mode, size, "white")
    draw = ImageDraw.Draw(image)
    stroke = max(2, w // 60)
    draw.line([(w * 0.45, h * 0.3), (w * 0.65, h * 0.3), (w * 0.5, h * 0.7)], fill="black", width=stroke)
    image.save(path)


def test_a_50_megapixel_photo_reads_as_the_same_digit_as_a_small_one_within_1_gb(tmp_path):

    big, small = tmp_path / "big.png", tmp_path / "small.png"
    photo(big, (8_660, 5_770))  # 49.97 MP, colour
    photo(small, (433, 288))
    assert 8_660 * 5_770 <= MAX_PIXELS
    # The peak is the process's own high-water mark (VmHWM): getrusage's ru_maxrss would carry over the
    # pytest process's peak through fork and exec.
    code = (
        "import re, sys, time, torch; from mnist20k.predict import read_digit\n"
        "t = time.perf_counter(); big = read_digit(sys.argv[1]); s = time.perf_counter() - t\n"
        "small = read_digit(sys.argv[2])\n"
        "cos = torch.nn.functional.cosine_similarity(big.flatten(), small.flatten(), dim=0).item()\n"
        "peak = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "print(peak, s, cos)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(big), str(small)], capture_output=True, text=True, check=True, timeout=300
    )
    peak_kb, _, cosine = (float(x) for x in done.stdout.split())
    assert peak_kb < 1_000_000, f"peak resident memory {peak_kb / 1e3:.0f} MB"
    assert cosine > 0.95
