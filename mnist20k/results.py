"""What a run's per-epoch records say once it is over: when it first reached a target accuracy, and
how steady its last epochs were. Plain functions of the records in metrics.jsonl."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

TARGET = 99.4  # percent: the challenge's line


def split(record: dict) -> str:
    """Which images an epoch was scored on: "val" (held out of the training images, --val) or "test"."""
    return "val" if "val_accuracy" in record else "test"


def accuracy(record: dict) -> float:
    """An epoch's accuracy in percent, on the images the run scores (see split)."""
    return record[f"{split(record)}_accuracy"]


def epoch_line(r: dict, epochs: int) -> str:
    """One line per epoch, the same on a terminal and in a log file."""
    s = split(r)
    return (
        f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  train_loss {r['train_loss']:.4f}  "
        f"{s}_loss {r[s + '_loss']:.4f}  {s}_acc {r[s + '_correct']}/{r[s + '_total']} "
        f"({r[s + '_accuracy']:.2f}%)  lr {r['lr']:.5f}  {r['seconds']:.1f}s"
    )


@dataclass(frozen=True)
class Reached:
    epoch: int  # the first epoch whose accuracy was at or above the target
    seconds: float  # training loop time until that epoch's score was known, earlier epochs included


def time_to_target(metrics: list[dict], target: float = TARGET) -> Reached | None:
    """The first epoch at or above `target` percent and the loop seconds spent until it; None if none."""
    elapsed = 0.0
    for r in metrics:
        elapsed += r["seconds"]
        if accuracy(r) >= target:
            return Reached(r["epoch"], elapsed)
    return None


def loop_seconds(metrics: list[dict]) -> float:
    """Training loop time of the whole run: training and test scoring, start-up and saving left out."""
    return sum(r["seconds"] for r in metrics)


def lowest_of_last(metrics: list[dict], k: int) -> float:
    """The lowest accuracy among the last `k` epochs (all of them in a shorter run): how steady the
    run ended."""
    return min(accuracy(r) for r in metrics[-k:])


def epochs_counted(runs: list[list[dict]], last: int) -> int:
    """How many last epochs the lowest of the last `last` looks at: fewer where a run has fewer epochs."""
    return min([last, *(len(metrics) for metrics in runs)])


def summarize(runs: dict[int, list[dict]], target: float = TARGET, last: int = 3) -> dict:
    """Many seeds of one configuration, from their records: each seed's final accuracy, the lowest of its
    last `last` epochs and its time to `target`; mean, standard deviation (None for one run) and minimum
    of the final accuracies; and whether every seed held `target` on each of its last `last` epochs."""
    finals = {seed: accuracy(metrics[-1]) for seed, metrics in runs.items()}
    lowest = {seed: lowest_of_last(metrics, last) for seed, metrics in runs.items()}
    reached = {seed: time_to_target(metrics, target) for seed, metrics in runs.items()}
    values = list(finals.values())
    misses = [seed for seed, low in lowest.items() if low < target]
    return {
        "seeds": list(runs),
        "last": epochs_counted(list(runs.values()), last),  # the last epochs looked at: fewer in shorter runs
        "final_accuracy": {str(s): v for s, v in finals.items()},
        "lowest_of_last": {str(s): v for s, v in lowest.items()},
        "time_to_target": {str(s): asdict(r) if r else None for s, r in reached.items()},
        "loop_seconds": {str(s): loop_seconds(m) for s, m in runs.items()},
        "mean": statistics.mean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values) if values else None,
        "misses": misses,
        "holds": bool(values) and not misses,
    }
