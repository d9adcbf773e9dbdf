"""The pictures the command line draws: curves.png of a run, when matplotlib (the `plot` extra) is installed,
and eval's grid of misread digits (torchvision's make_grid, captioned with PIL)."""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist20k.evaluate import Mistake
from mnist20k.files import write_figure, write_file


def save_curves(metrics: list[dict], path: Path) -> bool:
    """Train and test (or validation) loss, and accuracy, per epoch; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    from mnist20k.results import TARGET, split

    s = split(metrics[-1])
    scored = "validation" if s == "val" else "test"

    epochs = [r["epoch"] for r in metrics]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    loss_ax.plot(epochs, [r["train_loss"] for r in metrics], "o-", label="train")
    loss_ax.plot(epochs, [r[s + "_loss"] for r in metrics], "o-", label=scored)
    loss_ax.set(xlabel="epoch", ylabel="loss (NLL)", yscale="log", title="loss")
    loss_ax.legend()
    accuracies = [r[s + "_accuracy"] for r in metrics]
    acc_ax.plot(epochs, accuracies, "o-", color="tab:green")
    low, high = accuracy_range(accuracies)
    if low <= TARGET <= high:
        acc_ax.axhline(TARGET, color="gray", linestyle="--", linewidth=1, label=f"{TARGET}%")
        acc_ax.legend(loc="lower right")
    last = metrics[-1]
    title = f"{scored} accuracy (final {last[s + '_accuracy']:.2f}%)"
    acc_ax.set(xlabel="epoch", ylabel=f"{scored} accuracy (%)", title=title)
    acc_ax.set_ylim(low, high)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, len(epochs) + 0.5)  # whole epochs, a single one included
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    write_figure(fig, path, "the run itself is saved")
    return True


def accuracy_range(accuracies: list[float]) -> tuple[float, float]:
    """The accuracy axis fitted to the run: every epoch's point inside it with a margin, never above 100%."""
    low, high = min(accuracies), max(accuracies)
    margin = max(0.1, 0.1 * (high - low))
    return low - margin, min(100.0, high + margin)


def save_mistake_grid(images: torch.Tensor, mistakes: list[Mistake], path: Path | str, per_row: int = 10) -> None:
    """The misread digits as one PNG, tiles in the order of `mistakes`, row by row, each captioned
    "true→predicted" and the confidence of the wrong answer, so the picture reads on its own."""
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    tiles = images[[m.index for m in mistakes]].float().cpu() / 255  # (N, 1, 28, 28)
    tiles = F.interpolate(tiles, scale_factor=2, mode="nearest")  # big enough to see
    tiles = F.pad(tiles, (0, 0, 0, CAPTION_PX), value=0.15)  # a dark strip under each digit for its caption
    grid = make_grid(tiles, nrow=per_row, padding=2, pad_value=0.5)[0]  # (H, W), grey
    picture = Image.fromarray(grid.mul(255).round().to(torch.uint8).numpy(), mode="L")
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=CAPTION_PX - 2)
    tile_h, tile_w = tiles.shape[2] + 2, tiles.shape[3] + 2
    for i, m in enumerate(mistakes):
        x, y = 2 + (i % per_row) * tile_w, 2 + (i // per_row) * tile_h + tiles.shape[2] - CAPTION_PX
        _caption(draw, font, x + 2, y + 1, str(m.label), f"{m.predicted}  {m.confidence:.0%}")
    png = io.BytesIO()
    picture.save(png, format="PNG")
    write_file(path, png.getvalue())


CAPTION_PX = 12  # height of each tile's caption strip, in pixels


def _caption(draw, font, x: int, y: int, before: str, after: str) -> None:
    """`before` -> `after` in white, the arrow drawn: PIL's built-in font has no arrow glyph."""
    draw.text((x, y), before, fill=255, font=font)
    x += font.getlength(before) + 1
    mid = y + CAPTION_PX // 2 - 1
    draw.line([(x, mid), (x + 6, mid)], fill=255)
    draw.polygon([(x + 7, mid), (x + 4, mid - 3), (x + 4, mid + 3)], fill=255)
    draw.text((x + 9, y), after, fill=255, font=font)
