"""predict reads files from anywhere: a decompression bomb is refused unread, and a large photo is read
within a bounded memory, to the same digit as a small one."""

import json
import struct
import subprocess
import sys
import time
import zlib

import pytest
from PIL import Image, ImageDraw, ImageFile

from mnist20k.errors import Mnist20kError
from mnist20k.predict import MAX_PIXELS, read_digit


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb(path, side: int = 20_000) -> None:
    """A valid grey PNG that declares side x side pixels, white but for one thick stroke: its rows repeat,
    so it compresses to a few hundred KB and would decode to side**2 bytes."""
    white = b"\x00" + b"\xff" * side  # filter byte 0, then the row
    stroke = b"\x00" + b"\xff" * (side // 2) + b"\x00" * (side // 20) + b"\xff" * (side - side // 2 - side // 20)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(stroke if side // 10 < i < side - side // 10 else white) for i in range(side))
    idat += z.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


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
    t0 = time.perf_counter()
    with pytest.raises(Mnist20kError) as refused:
        read_digit(bomb_png)
    assert time.perf_counter() - t0 < 1.0
    assert str(refused.value) == (
        f"{bomb_png}: 20,000 x 20,000 pixels (400 MP) is over the limit of 50 MP for a photo of a digit; not decoded"
    )


def test_predict_refuses_the_bomb_in_one_line_and_reads_the_other_files(bomb_png, data_dir, tmp_path):
    from typer.testing import CliRunner

    from mnist20k.cli import app
    from mnist20k.config import make_config
    from mnist20k.train import train

    run = tmp_path / "run"
    train(make_config(epochs=1, max_batches=1, batch_size=16), data_dir=data_dir, out_dir=run, device="cpu")
    one = Image.new("L", (60, 80), 255)
    one.paste(0, (26, 10, 34, 70))
    one.save(tmp_path / "one.png")
    args = ["predict", str(run), str(bomb_png), str(tmp_path / "one.png"), "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)  # JSON: the table folds long paths across lines
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {bomb_png}: 20,000 x 20,000 pixels (400 MP) is over the limit of 50 MP for a photo of a digit; "
        "not decoded"
    ]
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [str(tmp_path / "one.png")]


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
        [sys.executable, "-c", code, str(big), str(small)], capture_output=True, text=True, check=True
    )
    peak_kb, seconds, cosine = (float(x) for x in done.stdout.split())
    assert peak_kb < 1_000_000, f"peak resident memory {peak_kb / 1e3:.0f} MB"
    assert seconds < 10
    assert cosine > 0.95
