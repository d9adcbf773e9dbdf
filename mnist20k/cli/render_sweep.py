"""What `mnist20k sweep` prints with rich: a live bar over every epoch, a line per finished run, a table per
configuration, and the verdict."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from mnist20k.cli.render import console, live_bar, say
from mnist20k.results import accuracy, epochs_counted, lowest_of_last


class SweepView:
    """A live bar over every epoch of every run, one line per finished run, a table per configuration."""

    def __init__(self, total_epochs: int, last: int, target: float):
        self.last, self.target = last, target
        self.progress = live_bar("sweep", "epochs")
        self.task = self.progress.add_task("", total=total_epochs)

    def start(self, jobs: list) -> None:
        from mnist20k.sweep import State

        for job in jobs:
            if job.state is State.DONE:
                say(f"{job.run.label}: finished before, skipped")
            elif job.state is State.SAVED:
                say(f"{job.run.label}: resuming after its last saved epoch")
        self.progress.start()

    def poll(self, epochs_done: int) -> None:
        self.progress.update(self.task, completed=epochs_done)

    def done(self, job, metrics: list[dict]) -> None:
        from mnist20k.sweep import State, last_log_line

        if job.state is not State.DONE:
            say(f"{job.run.label}: failed (exit {job.returncode}): {last_log_line(job)}", style="red")
            return
        final, last = accuracy(metrics[-1]), epochs_counted([metrics], self.last)
        lowest = lowest_of_last(metrics, last)
        lowest_text = "" if last == 1 else f", lowest of the {last_epochs(last)} {lowest:.2f}%"
        say(f"{job.run.label}: final {final:.2f}%{lowest_text} ({job.seconds:.0f} s)")

    def stop(self) -> None:
        self.progress.stop()

    def finish(self, record: dict) -> None:
        self.stop()
        for configuration in record["configurations"]:
            print_configuration(configuration, self.target)
        say(verdict(record), style="green" if record["holds"] else "yellow")


def print_configuration(configuration: dict, target: float) -> None:
    from mnist20k.distill import RECORD, described
    from mnist20k.sweep import configuration_name

    s = configuration["summary"]
    last = s["last"]
    name = configuration_name(configuration["grid"]) or "runs"
    teacher = configuration.get(RECORD)
    extra = teacher["seconds"] if teacher else 0.0  # a distilled run's time counts its teacher's training
    table = Table(title=Text(name + (f" ({described(teacher)})" if teacher else "")), title_justify="left")
    lowest = last != 1  # judged on the final epoch alone, the lowest of the last epochs is the final accuracy
    columns = ["seed", "final accuracy", *([f"lowest of the {last_epochs(last)}"] if lowest else [])]
    for col in (*columns, f"time to {target:.2f}%", "loop seconds"):
        table.add_column(col, justify="right")
    blank = [""] * len(columns)  # the rest of a row after its first two cells
    for run in configuration["runs"]:
        key = str(run["seed"])
        if run["status"] != "done":
            table.add_row(key, run["status"], *blank)
            continue
        reached = s["time_to_target"][key]
        table.add_row(
            key,
            f"{s['final_accuracy'][key]:.2f}%",
            *([f"{s['lowest_of_last'][key]:.2f}%"] if lowest else []),
            f"{reached['seconds'] + extra:.1f} s ({reached['epoch']})" if reached else "never",
            f"{s['loop_seconds'][key] + extra:.1f}",
        )
    if s["mean"] is not None:
        std = f" ± {s['std']:.2f}" if s["std"] is not None else ""
        table.add_row("mean", f"{s['mean']:.2f}%{std}", *blank, style="bold")
        table.add_row("min", f"{s['min']:.2f}%", *blank)
    console.print(table)


def last_epochs(last: int | str) -> str:
    """`the last epoch`, `the last 3 epochs` (`last` may be text: "3 (2 where the runs are shorter)")."""
    return "last epoch" if last == 1 else f"last {last} epochs"


def verdict(record: dict) -> str:
    """Whether every seed of every configuration held the target on each of its last epochs, and if not, which
    missed it."""
    target, last = record["target"], record["last"]
    counted = {c["summary"]["last"] for c in record["configurations"] if c["summary"]["seeds"]}
    if len(counted) == 1:  # every run is shorter than --last: name the number of epochs looked at
        last = counted.pop()
    elif counted - {last}:
        last = f"{last} ({', '.join(map(str, sorted(counted - {last})))} where the runs are shorter)"
    rule = f"every seed ≥ {target:.2f}% on {'its' if last == 1 else 'each of its'} {last_epochs(last)}"
    from mnist20k.sweep import run_label

    if not record["complete"]:
        failed = [
            run_label(r["seed"], c["grid"])
            for c in record["configurations"]
            for r in c["runs"]
            if r["status"] == "failed"
        ]
        if failed:
            return f"{rule}: not known, {', '.join(failed)} failed (see its train.log)"
        return f"{rule}: not known yet, some runs have not finished"

    misses = [run_label(seed, c["grid"]) for c in record["configurations"] for seed in c["summary"]["misses"]]
    return f"{rule}: yes" if not misses else f"{rule}: no ({', '.join(misses)} missed it)"
