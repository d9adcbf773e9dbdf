"""Everything the CLI draws with rich: the summary table, training progress, evaluation tables."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mnist20k.config import TrainConfig
from mnist20k.results import TARGET, accuracy, epoch_line, loop_seconds, split, time_to_target

console = Console(soft_wrap=True)  # long lines stay whole in logs and pipes


@contextlib.contextmanager
def on_stderr(yes: bool = True):
    """Within the block, everything drawn goes to stderr (when `yes`): with --json, stdout holds the JSON alone."""
    if not yes:
        yield
        return
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = None  # rich's default: whatever sys.stdout is when it prints


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 run`, `4 runs`, `1 epoch`: a count and its noun, singular for one."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def live_bar(label: str, unit: str) -> Progress:
    """A bar over many runs' epochs or trials, with an ETA; plain lines only in a log or a pipe."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def say(text: str, style: str | None = None) -> None:
    """A plain line: no markup, so paths with [brackets] print as they are."""
    console.print(text, style=style, markup=False, highlight=False)


def print_summary(name: str, args: dict, budget: int) -> bool:
    """The torchinfo table, the receptive field and the challenge's checklist; True when the network is
    within `budget` parameters."""
    import torchinfo

    from mnist20k.nets import build, count_params
    from mnist20k.nets.anatomy import inspect_network

    model = build(name, args).module
    stats = torchinfo.summary(
        model,
        input_size=(1, 1, 28, 28),
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
        device="cpu",
        verbose=0,
    )
    print(readable_units(str(stats)))  # plain print: torchinfo lays out its own fixed-width table
    anatomy = inspect_network(model)
    field = anatomy.field
    if field is None:
        say(f"Receptive field: {anatomy.field_note}")
    else:
        h, w = field.pixels
        least = "at least " if field.clipped else ""
        say(
            f"Receptive field: {least}{h}×{w} pixels of the 28×28 input, seen by each position of the last spatial "
            f"feature map ({field.layer}, {field.grid[0]}×{field.grid[1]})"
        )
    total = count_params(model)
    ok = total <= budget
    head = [f"global average pooling ({', '.join(anatomy.gap)})"] if anatomy.gap else []
    head += [anatomy.pooled] if anatomy.pooled and not anatomy.gap else []
    head += [f"fully connected ({', '.join(anatomy.linear)})"] if anatomy.linear else []
    say("Checklist (the challenge's usual rules; only the parameter budget sets the exit code):")
    _check(anatomy.batchnorm > 0, "BatchNorm", f"{anatomy.batchnorm} layers" if anatomy.batchnorm else "none")
    _check(anatomy.dropout > 0, "Dropout", f"{anatomy.dropout} layers" if anatomy.dropout else "none")
    _check(bool(head), "GAP or FC head", " and ".join(head) or "neither among the network's layers")
    verdict = f"{budget - total:,} to spare" if ok else f"{total - budget:,} OVER"
    _check(ok, "parameters", f"{total:,} / {budget:,}")
    say(f"Budget: {total:,} / {budget:,} parameters ({verdict})", style="green" if ok else "bold red")
    return ok


# torchinfo names the unit of its mult-add count by its enum ("Total mult-adds (Units.MEGABYTES)") on the Pythons
# whose Enum str() gives the member's name: the count is of operations, in millions or billions.
UNITS = {"Units.NONE": "", "Units.KILOBYTES": "k", "Units.MEGABYTES": "M", "Units.GIGABYTES": "G"}


def readable_units(table: str) -> str:
    """torchinfo's table with its mult-add unit as a word: `Total mult-adds (M): 4.07`."""
    for enum, unit in UNITS.items():
        table = table.replace(f"({enum})", f"({unit})" if unit else "")
    return table


def _check(ok: bool, rule: str, detail: str) -> None:
    mark = Text("  ✓ " if ok else "  ✗ ", style="green" if ok else "yellow")
    console.print(mark + Text(f"{rule:<15} {detail}"), highlight=False)


class SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:6.1f} it/s" if task.speed else "     - it/s", style="cyan")


class TrainView:
    """Progress bar per epoch, one line per finished epoch, a table at the end."""

    def __init__(self, config: TrainConfig | None, out: Path, resumed: bool = False):
        """`config` may wait for start(): a resumed run's settings are known once its checkpoint is read."""
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

    def start(self, config: TrainConfig | None = None, params: int | None = None) -> None:
        """The run's header line and the live progress: train() calls this once everything is checked, so
        that a run refused before training (network, data, device, run folder) prints its error line alone."""
        from mnist20k.config import PARAM_BUDGET

        self.started = True
        c = self.config = config or self.config
        verb = "resuming" if self.resumed else "training"
        size = ""
        if params is not None:
            over = "within" if params <= PARAM_BUDGET else "OVER"
            size = f" ({params:,} parameters, {over} the {PARAM_BUDGET:,} budget)"
        # the lr rounded for people; config.json keeps every digit
        short = f", at most {plural(c.max_batches, 'batch', 'batches')} an epoch" if c.max_batches else ""
        say(
            f"{verb} {c.model}{size} for {plural(c.epochs, 'epoch')} (batch {c.batch_size}, lr {c.lr:.4g}, "
            f"{c.schedule}, seed {c.seed}{short}) -> {self.out}"
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
            return (
                "interrupted before the first epoch ended: nothing of the run is kept; the same command starts it again"
            )
        return f"interrupted: the last completed epoch is saved; resume with: {resume_command(self.out, self.config)}"

    def finish(self, metrics: list[dict], curves: bool) -> None:
        from mnist20k.distill import described, recorded

        s = split(metrics[-1])
        teacher = recorded(self.out)
        extra = teacher["seconds"] if teacher else 0.0  # a distilled run's time counts its teacher's training
        table = Table(title="epochs" + (f" ({described(teacher)})" if teacher else ""), title_justify="left")
        for col in ("epoch", "train loss", f"{s} loss", f"{s} accuracy", "lr", "seconds"):
            table.add_column(col, justify="right")
        for r in metrics:
            table.add_row(
                str(r["epoch"]),
                f"{r['train_loss']:.4f}",
                f"{r[s + '_loss']:.4f}",
                f"{r[s + '_correct']}/{r[s + '_total']} ({r[s + '_accuracy']:.2f}%)",
                f"{r['lr']:.5f}",
                f"{r['seconds']:.1f}",
            )
        console.print(table)
        last = metrics[-1]
        say(f"final {s} accuracy: {last[s + '_accuracy']:.2f}% ({last[s + '_correct']}/{last[s + '_total']})")
        reached = time_to_target(metrics)
        counted = f", the teacher's {extra:.1f} s included" if teacher else ""
        if reached is None:
            say(f"never reached {TARGET:.2f}% ({loop_seconds(metrics) + extra:.1f} s of training loop{counted})")
        else:
            say(
                f"time to {TARGET:.2f}%: {reached.seconds + extra:.1f} s (epoch {reached.epoch}; "
                f"{loop_seconds(metrics) + extra:.1f} s of training loop in all{counted})"
            )
        accuracies = [accuracy(r) for r in metrics]
        say(f"{s} accuracy by epoch: {accuracies[0]:.2f}% {sparkline(accuracies)} {accuracies[-1]:.2f}%")
        say(f"checkpoint: {self.out / 'checkpoint.pt'}")
        if curves:
            say(f"curves: {self.out / 'curves.png'}")
        else:
            say("curves.png skipped: it needs matplotlib (pip install 'mnist20k[plot]')")


def resume_command(out: Path, config: TrainConfig | None) -> str:
    """The command that continues a run; a network of your own is named again (checkpoints never import code)."""
    from mnist20k.nets import is_reference

    command = f"mnist20k train --resume {out}"
    return command + f" --model {config.model}" if config is not None and is_reference(config.model) else command


def sparkline(values: list[float]) -> str:
    """One block character per value, from the lowest (▁) to the highest (█)."""
    blocks = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(blocks[round((v - lo) / span * (len(blocks) - 1))] for v in values)


def print_mistakes(mistakes: list, path: Path, shown: int = 5) -> None:
    """A line for the picture, the point of --errors, and the few most confident mistakes (--json lists all)."""
    if not mistakes:
        say("no test digit was misread: no picture written")
        return
    say(f"{plural(len(mistakes), 'misread digit')} in {path}, row by row, 10 a row, most confidently wrong first")
    first = ", ".join(f"#{m.index} {m.label}→{m.predicted} ({m.confidence:.0%})" for m in mistakes[:shown])
    say(f"the first {min(shown, len(mistakes))} (test image, true→predicted, confidence): {first}")


def print_predictions(predictions: list) -> None:
    table = Table(title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("digit", justify="right")
    table.add_column("top 3")
    for p in predictions:
        top3 = "  ".join(f"{d}: {prob:.1%}" for d, prob in p.top3)
        table.add_row(Text(p.path), Text(str(p.digit), style="bold"), top3)  # Text: a path is never markup
    console.print(table)


def print_score(score, checkpoint: Path, teacher: dict | None = None) -> None:
    say(f"checkpoint: {checkpoint}")
    if teacher:
        from mnist20k.distill import described

        say(described(teacher))
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
