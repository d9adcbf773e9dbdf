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
    from mnist20k.results import split

    s = split(metrics[-1])
    scored = "validation" if s == "val" else "test"

    epochs = [r["epoch"] for r in metrics]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    loss_ax.plot(epochs, [r["train_loss"] for r in metrics], "o-", label="train")
    loss_ax.plot(epochs, [r[s + "_loss"] for r in metrics], "o-", label=scored)
    loss_ax.set(xlabel="epoch", ylabel="loss (NLL)", yscale="log", title="loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [r[s + "_accuracy"] for r in metrics], "o-", color="tab:green")
    acc_ax.axhline(99.4, color="gray", linestyle="--", linewidth=1, label="99.4%")
    last = metrics[-1]
    title = f"{scored} accuracy (final {last[s + '_accuracy']:.2f}%)"
    acc_ax.set(xlabel="epoch", ylabel=f"{scored} accuracy (%)", title=title)
    acc_ax.set_ylim(max(min(r[s + "_accuracy"] for r in metrics) - 0.2, 97.0), 100.0)
    acc_ax.legend(loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    try:
        write_file(path, png.getvalue())
    except OutputError as e:
        raise OutputError(f"{e}; the run itself is saved") from None
    return True
