"""What `mnist20k tune` prints with rich: a bar over trials, a line per finished trial, and at the end the
best trials, the importances and the command that confirms the best on the test set."""

from __future__ import annotations

from rich.table import Table

from mnist20k.cli.render import console, live_bar, plural, say


def describe(params: dict) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def outcome_line(t) -> str:
    """One finished trial: its value and values, or how it ended."""
    outcome, attrs = t.user_attrs.get("outcome"), t.user_attrs
    head = f"trial {t.number}: "
    if outcome == "complete":
        seeds = attrs.get("seed_values") or []
        each = f" (seeds {' '.join(f'{v:.2f}' for v in seeds)})" if len(seeds) > 1 else ""
        head += f"{t.value:.2f}%{each}"
    elif outcome == "pruned":
        head += f"pruned at {attrs.get('pruned_at')}"
    elif outcome == "over budget":
        head += f"over budget ({attrs.get('params', 0):,} parameters)"
    else:
        head += f"{outcome}: {attrs.get('message', '')}"
    return f"{head}  [{describe(t.params)}]  {attrs.get('seconds', 0):.0f} s"


class TuneView:
    def __init__(self, trials: int):
        self.progress = live_bar("tune", "trials")
        self.task = self.progress.add_task("", total=trials)

    def start(self, study, done: int) -> None:
        if done:
            say(f"continuing study {study.study_name!r}: {plural(done, 'trial')} finished before")
        self.progress.update(self.task, completed=done)
        self.progress.start()

    def trial(self, t) -> None:
        say(outcome_line(t), style=None if t.user_attrs.get("outcome") == "complete" else "yellow")
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.stop()

    def finish(self, record: dict) -> None:
        self.stop()
        table = Table(title=f"best trials ({record['value']})", title_justify="left")
        for col in ("trial", "value", "settings", "seconds"):
            table.add_column(col, justify="left" if col == "settings" else "right")
        for t in record["best"]:
            table.add_row(str(t["number"]), f"{t['value']:.2f}%", describe(t["params"]), f"{t['seconds'] or 0:.0f}")
        console.print(table)
        if record["importances"]:
            say("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in record["importances"].items()))
        if record.get("plot"):
            say("study.png: the optimization history and the importances")
        if record["confirm"]:
            say("confirm the best on the test set (all 60,000 training images, seeds 1-5):")
            say(f"  {record['confirm']}")
