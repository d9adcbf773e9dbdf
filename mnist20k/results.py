"""What a run's per-epoch records say once it is over: when it first reached a target accuracy, and
how steady its last epochs were. Plain functions of the records in metrics.jsonl."""

from __future__ import annotations

from dataclasses import dataclass

TARGET = 99.4  # percent: the challenge's line


@dataclass(frozen=True)
class Reached:
    epoch: int  # the first epoch whose test accuracy was at or above the target
    seconds: float  # training loop time until that epoch's test score was known, earlier epochs included


def time_to_target(metrics: list[dict], target: float = TARGET) -> Reached | None:
    """The first epoch at or above `target` percent and the loop seconds spent until it; None if none."""
    elapsed = 0.0
    for r in metrics:
        elapsed += r["seconds"]
        if r["test_accuracy"] >= target:
            return Reached(r["epoch"], elapsed)
    return None


def loop_seconds(metrics: list[dict]) -> float:
    """Training loop time of the whole run: training and test scoring, start-up and saving left out."""
    return sum(r["seconds"] for r in metrics)


def lowest_of_last(metrics: list[dict], k: int) -> float:
    """The lowest test accuracy among the last `k` epochs: how steady the run ended."""
    return min(r["test_accuracy"] for r in metrics[-k:])
