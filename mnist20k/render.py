"""Everything the CLI draws with rich: the summary table, training progress, evaluation tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mnist20k.config import TrainConfig
from mnist20k.results import TARGET, loop_seconds, time_to_target

console = Console(soft_wrap=True)  # long lines stay whole in logs and pipes


def say(text: str, style: str | None = None) -> None:
    """A plain line: no markup, so paths with [brackets] print as they are."""
    console.print(text, style=style, markup=False, highlight=False)


def print_summary(name: str) -> bool:
    """The torchinfo table and the budget line; True when the model is within the 20k budget."""
    import torchinfo

    from mnist20k.model import PARAM_BUDGET, build_model, count_params

    model = build_model(name)
    stats = torchinfo.summary(
        model,
        input_size=(1, 1, 28, 28),
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
        device="cpu",
        verbose=0,
    )
    print(stats)  # plain print: torchinfo lays out its own fixed-width table
    total = count_params(model)
    ok = total <= PARAM_BUDGET
    verdict = f"{PARAM_BUDGET - total:,} to spare" if ok else f"{total - PARAM_BUDGET:,} OVER"
    say(f"Budget: {total:,} / {PARAM_BUDGET:,} parameters ({verdict})", style="green" if ok else "bold red")
    return ok


class SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:6.1f} it/s" if task.speed else "     - it/s", style="cyan")


def epoch_line(r: dict, epochs: int) -> str:
    """One line per epoch, the same on a terminal and in a log file."""
    return (
        f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  train_loss {r['train_loss']:.4f}  "
        f"test_loss {r['test_loss']:.4f}  test_acc {r['test_correct']}/{r['test_total']} "
        f"({r['test_accuracy']:.2f}%)  lr {r['lr']:.5f}  {r['seconds']:.1f}s"
    )


class TrainView:
    """Progress bar per epoch, one line per finished epoch, a table at the end."""

    def __init__(self, config: TrainConfig, out: Path, resumed: bool = False):
        self.config, self.out, self.resumed = config, Path(out), resumed
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            SpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[phase]}"),
            console=console,
            transient=True,
        )
        self.task = None
        self.last_epoch = 0
        self.started = False

    def start(self) -> None:
        """The run's header line and the live progress; called with the first progress report, so that
        a run refused before training (data, device, run folder) prints its error line alone."""
        self.started = True
        c = self.config
        verb = "resuming" if self.resumed else "training"
        say(
            f"{verb} {c.model} for {c.epochs} epochs (batch {c.batch_size}, lr {c.lr}, {c.schedule}, "
            f"seed {c.seed}) -> {self.out}"
        )
        self.progress.start()

    def step(self, epoch: int, done: int, total: int, loss: float) -> None:
        if not self.started:
            self.start()
        label = f"{epoch}/{self.config.epochs}"
        if self.task is None:
            self.task = self.progress.add_task("", total=total, epoch=label, loss="-", phase="")
        # train() reports an epoch's last step just before it scores the test set
        phase = "scoring test set" if done == total else ""
        self.progress.update(self.task, completed=done, epoch=label, loss=f"{loss:.4f}", phase=phase)

    def epoch(self, record: dict) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.last_epoch = record["epoch"]
        say(epoch_line(record, self.config.epochs))  # printed above the live progress bar

    def stop(self) -> None:
        if self.started:
            self.progress.stop()

    def interrupted_message(self) -> str:
        if not self.last_epoch and not self.resumed:
            return "interrupted before the first epoch ended: no checkpoint was written"
        return f"interrupted: the last completed epoch is saved; resume with: mnist20k train --resume {self.out}"

    def finish(self, metrics: list[dict], curves: bool) -> None:
        table = Table(title="epochs", title_justify="left")
        for col in ("epoch", "train loss", "test loss", "test accuracy", "lr", "seconds"):
            table.add_column(col, justify="right")
        for r in metrics:
            table.add_row(
                str(r["epoch"]),
                f"{r['train_loss']:.4f}",
                f"{r['test_loss']:.4f}",
                f"{r['test_correct']}/{r['test_total']} ({r['test_accuracy']:.2f}%)",
                f"{r['lr']:.5f}",
                f"{r['seconds']:.1f}",
            )
        console.print(table)
        last = metrics[-1]
        say(f"final test accuracy: {last['test_accuracy']:.2f}% ({last['test_correct']}/{last['test_total']})")
        reached = time_to_target(metrics)
        if reached is None:
            say(f"never reached {TARGET:.2f}% ({loop_seconds(metrics):.1f} s of training loop)")
        else:
            say(
                f"time to {TARGET:.2f}%: {reached.seconds:.1f} s (epoch {reached.epoch}; "
                f"{loop_seconds(metrics):.1f} s of training loop in all)"
            )
        accuracies = [r["test_accuracy"] for r in metrics]
        say(f"test accuracy by epoch: {accuracies[0]:.2f}% {sparkline(accuracies)} {accuracies[-1]:.2f}%")
        say(f"checkpoint: {self.out / 'checkpoint.pt'}")
        if curves:
            say(f"curves: {self.out / 'curves.png'}")
        else:
            say("curves.png skipped: it needs matplotlib (pip install 'mnist20k[plot]')")


def sparkline(values: list[float]) -> str:
    """One block character per value, from the lowest (▁) to the highest (█)."""
    blocks = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(blocks[round((v - lo) / span * (len(blocks) - 1))] for v in values)


def print_mistakes(mistakes: list, path: Path) -> None:
    if not mistakes:
        say("no test digit was misread: no picture written")
        return
    table = Table(title=Text(f"misread digits in {path}, row by row, 10 per row"), title_justify="left")
    for col in ("tile", "test index", "true", "predicted", "confidence"):
        table.add_column(col, justify="right")
    for tile, m in enumerate(mistakes):
        table.add_row(str(tile), str(m.index), str(m.label), str(m.predicted), f"{m.confidence:.1%}")
    console.print(table)


def print_predictions(predictions: list) -> None:
    table = Table(title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("digit", justify="right")
    table.add_column("top 3")
    for p in predictions:
        top3 = "  ".join(f"{d}: {prob:.1%}" for d, prob in p.top3)
        table.add_row(Text(p.path), Text(str(p.digit), style="bold"), top3)  # Text: a path is never markup
    console.print(table)


def print_score(score, checkpoint: Path) -> None:
    say(f"checkpoint: {checkpoint}")
    say(f"test loss {score.loss:.4f}  accuracy {score.correct}/{score.total} ({score.accuracy:.2f}%)")
    per_class = Table(title="per class", title_justify="left")
    for col in ("digit", "correct", "images", "accuracy"):
        per_class.add_column(col, justify="right")
    for digit, row in enumerate(score.confusion):
        per_class.add_row(str(digit), str(row[digit]), str(sum(row)), f"{score.per_class[digit]:.2f}%")
    console.print(per_class)
    confusion = Table(title="confusion (rows: true digit, columns: predicted)", title_justify="left")
    confusion.add_column("", justify="right", style="bold")
    for digit in range(10):
        confusion.add_column(str(digit), justify="right")
    for digit, row in enumerate(score.confusion):
        cells = [f"[green]{n}[/]" if i == digit else (f"[red]{n}[/]" if n else "·") for i, n in enumerate(row)]
        confusion.add_row(str(digit), *cells)
    console.print(confusion)
