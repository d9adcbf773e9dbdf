"""predict on your own images, the --errors grid, curves.png and the sparkline."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.io import decode_image, encode_jpeg, write_png
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.cli.plots import CAPTION_PX
from mnist20k.cli.render import sparkline
from mnist20k.config import make_config
from mnist20k.data import load_split
from mnist20k.predict import read_digit
from mnist20k.train import train

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def seven() -> torch.Tensor:
    """A 28x28 '7' prepared as MNIST digits are: ink bright, inside 20x20, centred by mass."""
    x = torch.zeros(28, 28)
    x[5:8, 6:22] = 1.0  # the bar
    for r in range(8, 25):  # the stem, leaning left as it goes down
        c = 20 - (r - 8) // 2
        x[r, c - 1 : c + 2] = 1.0
    mass = x.sum()
    cy = (x.sum(1) * torch.arange(28)).sum() / mass
    cx = (x.sum(0) * torch.arange(28)).sum() / mass
    return x.roll((round(13.5 - cy.item()), round(13.5 - cx.item())), dims=(0, 1))


def photo(digit: torch.Tensor, scale: int = 5, ink_dark: bool = True) -> torch.Tensor:
    """The digit scaled up, off-centre on a larger sheet: what a phone or scanner gives."""
    big = F.interpolate(digit[None, None], scale_factor=scale, mode="bilinear")[0, 0]
    sheet = torch.zeros(40 + big.shape[0], 120 + big.shape[1])
    sheet[10 : 10 + big.shape[0], 100 : 100 + big.shape[1]] = big
    sheet = (sheet * 255).round()
    return (255 - sheet if ink_dark else sheet).to(torch.uint8)


@pytest.mark.parametrize("ink_dark", [True, False])
def test_read_digit_undoes_scale_offset_and_colours(tmp_path, ink_dark):
    original = seven()
    path = tmp_path / "seven.png"
    write_png(photo(original, ink_dark=ink_dark)[None], str(path))
    restored = read_digit(path)
    assert restored.shape == (28, 28)
    assert restored.min() >= 0 and restored.max() == pytest.approx(1.0, abs=0.02)
    # The same strokes in the same place: the two images nearly coincide.
    cosine = F.cosine_similarity(restored.flatten(), original.flatten(), dim=0)
    assert cosine > 0.85
    # Fits in 20x20 and has its centre of mass at the centre.
    rows, cols = torch.nonzero(restored > 0.25, as_tuple=True)
    assert rows.max() - rows.min() < 21 and cols.max() - cols.min() < 21
    mass = restored.sum()
    cy = (restored.sum(1) * torch.arange(28)).sum() / mass
    cx = (restored.sum(0) * torch.arange(28)).sum() / mass
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1


def test_read_digit_accepts_colour_jpeg(tmp_path):
    rgb = photo(seven())[None].repeat(3, 1, 1)
    rgb[0] = rgb[0] // 2 + 100  # tinted paper, still lighter than the ink
    path = tmp_path / "seven.jpg"
    path.write_bytes(bytes(encode_jpeg(rgb).tolist()))
    cosine = F.cosine_similarity(read_digit(path).flatten(), seven().flatten(), dim=0)
    assert cosine > 0.8


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    import os

    if not os.environ.get("MNIST20K_DATA_DIR"):
        pytest.skip("needs real MNIST: set MNIST20K_DATA_DIR to a folder holding MNIST/raw/")
    out = tmp_path_factory.mktemp("mnist") / "run"
    config = make_config(epochs=1, max_batches=120, lr=0.1)
    train(config, data_dir=os.environ["MNIST20K_DATA_DIR"], out_dir=out, device="cpu")
    return out


@pytest.mark.mnist
def test_predict_on_photos_of_test_digits_agrees_with_the_originals(mnist_model, tmp_path):
    from mnist20k.checkpoint import load_checkpoint
    from mnist20k.nets import rebuild

    images, _ = load_split(None, train=False)
    model = rebuild(load_checkpoint(mnist_model)).module.eval()
    originals = images[:20, 0].float() / 255
    with torch.no_grad():
        expected = model((originals[:, None] - 0.1307) / 0.3081).argmax(1).tolist()
    paths = []
    for i, digit in enumerate(originals):
        paths.append(tmp_path / f"{i}.png")
        write_png(photo(digit, ink_dark=i % 2 == 0)[None], str(paths[-1]))
    result = invoke("predict", mnist_model, *paths, "--json")
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [g["file"] for g in got] == [str(p) for p in paths]
    agree = sum(g["digit"] == e for g, e in zip(got, expected, strict=True))
    assert agree >= 19, (got, expected)
    for g in got:
        assert len(g["top3"]) == 3 and g["top3"][0]["digit"] == g["digit"]
        assert g["top3"][0]["p"] >= g["top3"][1]["p"] >= g["top3"][2]["p"]


def test_predict_refuses_each_bad_file_in_one_line_and_reads_the_rest(data_dir, tmp_path, monkeypatch):
    """Every kind of file that is no digit, each told in one line in the order given; the digits among them are
    read, in a table (a path that looks like rich markup printed as it is) and as JSON."""
    from conftest import bomb

    out = tmp_path / "run"
    train(make_config(epochs=1, max_batches=2), data_dir=data_dir, out_dir=out, device="cpu")
    monkeypatch.chdir(tmp_path)  # short relative paths: each stays on one line of the table
    write_png(photo(seven())[None], "seven.png")
    write_png(photo(seven())[None], "[red]seven.png")
    Path("notes.png").write_text("not an image")
    write_png(torch.full((1, 50, 50), 255, dtype=torch.uint8), "blank.png")
    whole = Path("seven.png").read_bytes()
    Path("truncated.png").write_bytes(whole[: len(whole) // 2])
    bomb(tmp_path / "bomb.png")
    files = ["seven.png", "notes.png", "blank.png", "missing.png", "[red]seven.png", "truncated.png", "bomb.png"]
    before = {name: Path(name).read_bytes() for name in files if Path(name).exists()}
    for words in ([], ["--json"]):
        result = invoke("predict", out, *files, "--device", "cpu", *words)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.stderr.strip().splitlines() == [
            "error: notes.png: not a readable PNG or JPEG (truncated, corrupt or another format)",
            "error: blank.png: no ink found: the image is blank",
            "error: missing.png: no such file",
            "error: truncated.png: not a readable PNG or JPEG (truncated, corrupt or another format)",
            "error: bomb.png: over 179 MP, far over the limit of 50 MP for a photo of a digit; not decoded",
        ]
        if words:
            assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == ["seven.png", "[red]seven.png"]
        else:
            rows = [line for line in result.stdout.splitlines() if "%" in line]
            assert len(rows) == 2 and "seven.png" in rows[0] and "[red]seven.png" in rows[1]
    assert {name: Path(name).read_bytes() for name in before} == before


def test_errors_grid_matches_the_listed_mistakes(data_dir, tmp_path):
    out = tmp_path / "run"
    train(make_config(epochs=1, max_batches=2), data_dir=data_dir, out_dir=out, device="cpu")
    grid = tmp_path / "errors.png"
    args = ("eval", out, "--data-dir", data_dir, "--device", "cpu", "--errors", grid, "--errors-limit", 23)
    data = json.loads(invoke(*args, "--json").stdout)
    n = len(data["errors"])
    assert 1 <= n <= 23 and all(e["label"] != e["predicted"] for e in data["errors"])
    confidences = [e["confidence"] for e in data["errors"]]
    assert confidences == sorted(confidences, reverse=True)  # most confidently wrong first
    image = decode_image(str(grid))
    tile_w = 2 * 28 + 2  # tiles are drawn at twice the size, 2 pixels apart
    tile_h = tile_w + CAPTION_PX  # and captioned underneath
    assert image.shape[1:] == (math.ceil(n / 10) * tile_h + 2, min(n, 10) * tile_w + 2)
    caption = image[0, 2 + 56 : 2 + 56 + CAPTION_PX, 2 : 2 + 56]  # the first tile's caption strip
    assert (caption > 128).sum() >= 10 and caption.min() < 64  # light text on the dark strip
    # the table says where the picture is and names the first few, not every tile
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"{n} misread digit{'s' * (n != 1)} in {grid}, row by row, 10 a row" in result.stdout
    first = data["errors"][0]
    assert f"#{first['index']} {first['label']}→{first['predicted']} (" in result.stdout
    plain = invoke("eval", out, "--data-dir", data_dir, "--device", "cpu")
    assert len(result.stdout.splitlines()) == len(plain.stdout.splitlines()) + 2  # two lines, whatever the count
    assert invoke("eval", out, "--data-dir", data_dir, "--errors", tmp_path / "e.txt").exit_code == 2


# matplotlib's first colours: the train loss, the test loss, and the accuracy
LINES = {"train loss": (31, 119, 180), "test loss": (255, 127, 14), "accuracy": (44, 160, 44)}


def pixels_of(image: torch.Tensor, colour: tuple[int, int, int]) -> torch.Tensor:
    """(H, W) True where the RGB(A) image has this colour, give or take antialiasing's nearest shades."""
    return (image[:3].int() - torch.tensor(colour)[:, None, None]).abs().amax(0) <= 12


@pytest.mark.parametrize("epochs", [1, 3])
def test_curves_png_draws_every_epoch_of_each_curve_on_whole_epochs(epochs, data_dir, tmp_path):
    """Each curve's colour where its panel is, for a run of one epoch too, at whatever accuracy it reached."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    result = invoke("train", "--epochs", epochs, "--max-batches", 2, "--data-dir", data_dir, "--out", out,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"curves: {out / 'curves.png'}" in result.stdout and "test accuracy by epoch:" in result.stdout
    image = decode_image(str(out / "curves.png"))
    width = image.shape[2]
    for name, colour in LINES.items():
        where = pixels_of(image, colour).nonzero()
        assert len(where) > 20 * epochs, f"{name}: {len(where)} pixels"  # a marker per epoch, and the lines
        left, right = where[:, 1].min().item(), where[:, 1].max().item()
        assert (right < width / 2) if "loss" in name else (left > width / 2), name  # in its own panel
        if epochs > 1:  # a curve across the epochs, wider than its legend's sample of it
            assert right - left > width / 5, f"{name}: {right - left} pixels wide"


def test_the_accuracy_axis_fits_the_run():
    from mnist20k.cli.plots import accuracy_range

    low, high = accuracy_range([81.8])
    assert low < 81.8 < high
    low, high = accuracy_range([97.1, 99.5, 99.6])
    assert low < 97.1 and 99.6 < high <= 100.0


def test_without_matplotlib_the_picture_is_skipped_with_a_hint(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "run"
    result = invoke("train", "--epochs", 1, "--max-batches", 2, "--data-dir", data_dir, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert not (out / "curves.png").exists()
    assert result.stdout.count("curves.png skipped") == 1 and "mnist20k[plot]" in result.stdout


def test_sparkline_spans_lowest_to_highest():
    assert sparkline([97.0, 99.0, 98.0, 99.5]) == "▁▇▄█"  # 0, 0.8, 0.4, 1 of the range
    assert sparkline([99.0, 99.0]) == "▁▁"


def test_progress_says_when_the_test_set_is_being_scored(tmp_path):
    from mnist20k.cli.render import TrainView

    view = TrainView(make_config(), tmp_path)
    view.step(1, 5, 10, 0.5)
    assert view.progress.tasks[0].fields["phase"] == ""
    view.step(1, 10, 10, 0.4)  # train() reports the last step just before it scores the test set
    assert view.progress.tasks[0].fields["phase"] == "scoring test set"
    view.stop()
