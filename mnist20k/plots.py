"""curves.png of a run, when matplotlib (the `plot` extra) is installed."""

from __future__ import annotations

import io
from pathlib import Path


def save_curves(metrics: list[dict], path: Path) -> bool:
    """Train and test (or validation) loss, and accuracy, per epoch; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    from mnist20k.errors import OutputError
    from mnist20k.files import write_file
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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    try:
        write_file(path, png.getvalue())
    except OutputError as e:
        raise OutputError(f"{e}; the run itself is saved") from None
    return True


def accuracy_range(accuracies: list[float]) -> tuple[float, float]:
    """The accuracy axis fitted to the run: every epoch's point inside it with a margin, never above 100%."""
    low, high = min(accuracies), max(accuracies)
    margin = max(0.1, 0.1 * (high - low))
    return low - margin, min(100.0, high + margin)
