"""What `mnist20k tune` prints with rich: a bar over trials, a line per finished trial, and at the end the
best trials (with two objectives, the Pareto front), the importances and the commands that confirm them on the
test set."""

from __future__ import annotations

import json

from rich.table import Table

from mnist20k.cli.render import console, live_bar, plural, say
from mnist20k.distill import RECORD

CONFIRMS = 5  # front trials whose confirm commands are printed: the most accurate (all are in tune.json)


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
        head += f"{t.values[0]:.2f}%{each}"
        if len(t.values) > 1:
            head += f" with {t.values[1]:,.0f} parameters"
    elif outcome == "pruned":
        head += f"pruned at {attrs.get('pruned_at')}"
    elif outcome == "over budget":
        head += f"over budget ({attrs.get('params', 0):,} parameters)"
    else:
        head += f"{outcome}: {attrs.get('message', '')}"
    teacher = attrs.get(RECORD)
    if teacher:  # its time counts the teacher's training
        taught = f"{attrs.get('seconds', 0) + teacher['seconds']:.0f} s, distilled from {teacher['folder']}"
        return f"{head}  [{describe(t.params)}]  {taught} (its {teacher['seconds']:.0f} s included)"
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
        front = record["pareto"] is not None
        title = "Pareto front, fewest parameters first" if front else "best trials"
        teachers = {t[RECORD]["folder"] for t in record["best"] if t[RECORD]}
        if teachers:
            title += f"; distilled from {', '.join(sorted(teachers))}, seconds include the teacher's training"
        table = Table(title=f"{title} ({record['value']})", title_justify="left")
        columns = ("trial", "parameters", "val accuracy") if front else ("trial", "value")
        for col in (*columns, "settings", "seconds"):
            table.add_column(col, justify="left" if col == "settings" else "right")
        for t in record["best"]:
            cost = (f"{t['parameters']:,}",) if front else ()
            seconds = (t["seconds"] or 0) + (t[RECORD]["seconds"] if t[RECORD] else 0)
            table.add_row(str(t["number"]), *cost, f"{t['value']:.2f}%", describe(t["params"]), f"{seconds:.0f}")
        console.print(table)
        if record["importances"]:
            say("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in record["importances"].items()))
        if record.get("plot"):
            drawn = "every trial against its parameters, the front" if front else "the optimization history"
            say(f"study.png: {drawn} and the importances")
        if front:
            unique: dict[str, dict] = {}  # a sampler may try the same settings again: one command for each
            for t in record["pareto"]:
                unique.setdefault(json.dumps(t["params"], sort_keys=True), t)
            shown = sorted(unique.values(), key=lambda t: -t["values"][0])[:CONFIRMS]
            rest = len(unique) - len(shown)
            more = f"; the other {rest} in tune.json" if rest else ""
            say(f"confirm a front trial on the test set (all 60,000 training images, seeds 1-5){more}:")
            for t in sorted(shown, key=lambda t: t["values"][1]):
                say(f"  trial {t['number']}, {t['parameters']:,} parameters: {t['confirm']}")
        elif record["confirm"]:
            say("confirm the best on the test set (all 60,000 training images, seeds 1-5):")
            say(f"  {record['confirm']}")
